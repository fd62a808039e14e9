package signaling

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard (Curve25519) key, private or public.
type Key [32]byte

// NewPrivateKey makes a clamped random WireGuard private key.
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// ParseKey reads a base64 key as wg(8) prints it.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%w: must be a base64 WireGuard key of 32 bytes", ErrInvalid)
	}
	copy(k[:], b)
	return k, nil
}

// Public derives the public key of a private key.
func (k Key) Public() Key {
	var pub Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err == nil { // X25519 fails only for low-order points, which a base-point product never is
		copy(pub[:], out)
	}
	return pub
}

// String is the base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex is the form wireguard-go's IPC protocol takes.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }
