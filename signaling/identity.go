package signaling

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// ErrForbidden is the cause of a refusal for a bad signature, a stale timestamp or a client that is not allowed.
var ErrForbidden = errors.New("forbidden")

// MaxClockSkew bounds how far a signed message's timestamp may be from the receiver's clock.
const MaxClockSkew = 2 * time.Minute

// Identity is a long-term ed25519 key that names a client to exits. It is separate from the
// WireGuard keys, which are fresh for every session.
type Identity struct {
	priv ed25519.PrivateKey
}

// NewIdentity makes a random identity.
func NewIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return &Identity{priv: priv}, nil
}

// ParseIdentity reads an identity from its base64 seed (as String prints it).
func ParseIdentity(s string) (*Identity, error) {
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: must be a base64 ed25519 seed of %d bytes", ed25519.SeedSize)
	}
	return &Identity{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// String returns the private seed in base64: keep it secret.
func (id *Identity) String() string { return base64.StdEncoding.EncodeToString(id.priv.Seed()) }

// ID is the public identity, base64url: safe as a NATS subject token.
func (id *Identity) ID() string {
	return base64.RawURLEncoding.EncodeToString(id.priv.Public().(ed25519.PublicKey))
}

func requestSigningBytes(r *messages.SessionRequest) []byte {
	return []byte(strings.Join([]string{"warren-session-request-v1", r.SessionID, r.ExitID, r.ClientID, r.WGPublicKey, strconv.FormatInt(r.Timestamp, 10)}, "\n"))
}

func closeSigningBytes(c *messages.SessionClose) []byte {
	return []byte(strings.Join([]string{"warren-session-close-v1", c.SessionID, c.Signer, c.Reason, strconv.FormatInt(c.Timestamp, 10)}, "\n"))
}

// SignSessionRequest fills ClientID, Timestamp and Signature.
func (id *Identity) SignSessionRequest(r *messages.SessionRequest, now time.Time) {
	r.ClientID = id.ID()
	r.Timestamp = now.UnixMilli()
	r.Signature = base64.RawURLEncoding.EncodeToString(ed25519.Sign(id.priv, requestSigningBytes(r)))
}

// SignSessionClose fills Signer, Timestamp and Signature.
func (id *Identity) SignSessionClose(c *messages.SessionClose, now time.Time) {
	c.Signer = id.ID()
	c.Timestamp = now.UnixMilli()
	c.Signature = base64.RawURLEncoding.EncodeToString(ed25519.Sign(id.priv, closeSigningBytes(c)))
}

// VerifySessionRequest checks the signature and that the timestamp is within MaxClockSkew of now.
func VerifySessionRequest(r *messages.SessionRequest, now time.Time) error {
	return verify(r.ClientID, r.Signature, r.Timestamp, requestSigningBytes(r), now)
}

// VerifySessionClose checks a goodbye's signature by its Signer; the receiver checks that the signer
// is the session's other party.
func VerifySessionClose(c *messages.SessionClose, now time.Time) error {
	return verify(c.Signer, c.Signature, c.Timestamp, closeSigningBytes(c), now)
}

func verify(clientID, sig string, ts int64, msg []byte, now time.Time) error {
	pub, err := base64.RawURLEncoding.DecodeString(clientID)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: bad client id", ErrForbidden)
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !ed25519.Verify(pub, msg, s) {
		return fmt.Errorf("%w: bad signature", ErrForbidden)
	}
	if skew := now.Sub(time.UnixMilli(ts)); skew > MaxClockSkew || skew < -MaxClockSkew {
		return fmt.Errorf("%w: timestamp %v off the receiver's clock", ErrForbidden, skew.Round(time.Second))
	}
	return nil
}
