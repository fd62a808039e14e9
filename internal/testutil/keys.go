package testutil

import (
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// KeyPair returns a new WireGuard (X25519) private key, clamped, and its public key.
func KeyPair(t testing.TB) (priv, pub [32]byte) {
	t.Helper()
	if _, err := rand.Read(priv[:]); err != nil {
		t.Fatal(err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(pub[:], p)
	return priv, pub
}
