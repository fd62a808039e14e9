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

// Errors of verification.
var (
	// ErrForbidden is the cause of a refusal for a bad signature, a stale timestamp or a client that is not allowed.
	ErrForbidden = errors.New("forbidden")
	// ErrUnsigned: a message that must be signed to be acted on is not.
	ErrUnsigned = errors.New("unsigned")
)

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

// signingBytes is a domain label and the fields, each prefixed with its length: every signed kind
// has its own label, so a signature over one kind never passes as another's, and no field's
// content can shift the boundary to the next (free text such as reasons may hold anything).
func signingBytes(label string, fields ...string) []byte {
	var b strings.Builder
	b.WriteString(label)
	for _, f := range fields {
		b.WriteString("\n")
		b.WriteString(strconv.Itoa(len(f)))
		b.WriteString(":")
		b.WriteString(f)
	}
	return []byte(b.String())
}

func requestSigningBytes(r *messages.SessionRequest) []byte {
	return signingBytes("warren-session-request-v1", r.SessionID, r.ExitID, r.ClientID, r.WGPublicKey, strconv.FormatInt(r.Timestamp, 10), r.Certificate)
}

func responseSigningBytes(r *messages.SessionResponse) []byte {
	return signingBytes("warren-session-response-v1", r.SessionID, r.ExitID, r.ClientID, r.ExitWGPublicKey, r.Endpoint,
		strings.Join(r.ClientAddresses, ","), strings.Join(r.ExitAddresses, ","), strconv.Itoa(int(r.ConnectPort)),
		strconv.Itoa(r.MTU), r.ExitIdentity, r.Certificate, strconv.FormatInt(r.Timestamp, 10))
}

func errorSigningBytes(e *messages.ErrorResponse) []byte {
	return signingBytes("warren-error-v1", e.SessionID, e.ClientID, e.ExitID, e.Nonce, e.Code, e.Message, e.Certificate, e.Signer, strconv.FormatInt(e.Timestamp, 10))
}

// The session lists are signed as one field each, joined by commas (session ids are hex, so no id
// holds a comma), after their count.
func pingSigningBytes(p *messages.SessionsPing) []byte {
	return signingBytes("warren-sessions-ping-v1", strconv.Itoa(len(p.SessionIDs)), strings.Join(p.SessionIDs, ","),
		p.Nonce, p.ClientID, strconv.FormatInt(p.Timestamp, 10))
}

func pongSigningBytes(p *messages.SessionsPong) []byte {
	return signingBytes("warren-sessions-pong-v1", p.Nonce, p.ExitID, p.ClientID, strconv.Itoa(len(p.Known)),
		strings.Join(p.Known, ","), p.Signer, strconv.FormatInt(p.Timestamp, 10))
}

func closeSigningBytes(c *messages.SessionClose) []byte {
	return signingBytes("warren-session-close-v1", c.SessionID, c.Signer, c.Reason, strconv.FormatInt(c.Timestamp, 10))
}

// SignSessionRequest fills ClientID, Timestamp and Signature.
func (id *Identity) SignSessionRequest(r *messages.SessionRequest, now time.Time) {
	r.ClientID = id.ID()
	r.Timestamp = now.UnixMilli()
	r.Signature = id.sign(requestSigningBytes(r))
}

// SignSessionClose fills Signer, Timestamp and Signature.
func (id *Identity) SignSessionClose(c *messages.SessionClose, now time.Time) {
	c.Signer = id.ID()
	c.Timestamp = now.UnixMilli()
	c.Signature = id.sign(closeSigningBytes(c))
}

// SignSessionResponse fills ExitIdentity, Timestamp and Signature. ExitID and ClientID must be set.
func (id *Identity) SignSessionResponse(r *messages.SessionResponse, now time.Time) {
	r.ExitIdentity = id.ID()
	r.Timestamp = now.UnixMilli()
	r.Signature = id.sign(responseSigningBytes(r))
}

// SignError fills Signer, Timestamp and Signature of a refusal bound to a session and client.
func (id *Identity) SignError(e *messages.ErrorResponse, now time.Time) {
	e.Signer = id.ID()
	e.Timestamp = now.UnixMilli()
	e.Signature = id.sign(errorSigningBytes(e))
}

// SignSessionsPing fills ClientID, Timestamp and Signature.
func (id *Identity) SignSessionsPing(p *messages.SessionsPing, now time.Time) {
	p.ClientID = id.ID()
	p.Timestamp = now.UnixMilli()
	p.Signature = id.sign(pingSigningBytes(p))
}

// SignSessionsPong fills Signer, Timestamp and Signature.
func (id *Identity) SignSessionsPong(p *messages.SessionsPong, now time.Time) {
	p.Signer = id.ID()
	p.Timestamp = now.UnixMilli()
	p.Signature = id.sign(pongSigningBytes(p))
}

func (id *Identity) sign(msg []byte) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(id.priv, msg))
}

// VerifySessionResponse checks the signature by ExitIdentity and the clock; the caller checks that
// ExitIdentity is trusted for ExitID (ExitTrust) and that the response is for its own request.
func VerifySessionResponse(r *messages.SessionResponse, now time.Time) error {
	return verify(r.ExitIdentity, r.Signature, r.Timestamp, responseSigningBytes(r), now)
}

// VerifyError checks a signed refusal's signature by its Signer and the clock. An unsigned refusal
// fails with ErrUnsigned.
func VerifyError(e *messages.ErrorResponse, now time.Time) error {
	if e.Signer == "" {
		return ErrUnsigned
	}
	return verify(e.Signer, e.Signature, e.Timestamp, errorSigningBytes(e), now)
}

// VerifySessionsPing checks the ping's signature by its ClientID and the clock.
func VerifySessionsPing(p *messages.SessionsPing, now time.Time) error {
	return verify(p.ClientID, p.Signature, p.Timestamp, pingSigningBytes(p), now)
}

// VerifySessionsPong checks the pong's signature by its Signer and the clock.
func VerifySessionsPong(p *messages.SessionsPong, now time.Time) error {
	return verify(p.Signer, p.Signature, p.Timestamp, pongSigningBytes(p), now)
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

func verify(signer, sig string, ts int64, msg []byte, now time.Time) error {
	if err := verifySignature(signer, sig, msg); err != nil {
		return err
	}
	if skew := now.Sub(time.UnixMilli(ts)); skew > MaxClockSkew || skew < -MaxClockSkew {
		return fmt.Errorf("%w: timestamp %v off the receiver's clock", ErrForbidden, skew.Round(time.Second))
	}
	return nil
}
