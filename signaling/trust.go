package signaling

// Trust between engines that meet on a shared NATS bus: which exit identity a client accepts for an
// exit id (a pin, an operator's certificate, or — only when declared — any), and the operator
// certificates that bind an exit id or a client to an identity (docs/security.md).

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of trust; each wraps ErrForbidden, so a refusal on these grounds is a forbidden one.
var (
	ErrUntrustedExit  = fmt.Errorf("%w: exit identity not trusted", ErrForbidden)
	ErrBadCertificate = fmt.Errorf("%w: bad certificate", ErrForbidden)
)

// Certificate kinds.
const (
	CertExit   = "exit"   // binds an exit id to an exit identity
	CertClient = "client" // certifies a client identity
)

// Certificate is an operator's statement that Identity may act as an exit with ID (CertExit), or as
// a client (CertClient), until Expires. Its wire form is base64url(JSON) "." base64url(signature).
type Certificate struct {
	Version  int    `json:"v"`
	Kind     string `json:"kind"`
	ID       string `json:"id,omitempty"` // the exit id, for CertExit
	Identity string `json:"identity"`     // the certified ed25519 identity, base64url
	Expires  int64  `json:"exp"`          // Unix seconds
	Operator string `json:"operator"`     // the signing operator's public key, base64url
}

// OperatorKey is an operator's ed25519 key: it signs certificates.
type OperatorKey struct{ id *Identity }

// NewOperatorKey makes a random operator key.
func NewOperatorKey() (*OperatorKey, error) {
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	return &OperatorKey{id: id}, nil
}

// ParseOperatorKey reads an operator key from its base64 seed.
func ParseOperatorKey(s string) (*OperatorKey, error) {
	id, err := ParseIdentity(s)
	if err != nil {
		return nil, fmt.Errorf("operator key: %w", err)
	}
	return &OperatorKey{id: id}, nil
}

// String is the private seed (keep it secret); Public is what engines are configured to trust.
func (k *OperatorKey) String() string { return k.id.String() }

// Public is the operator's public key, base64url.
func (k *OperatorKey) Public() string { return k.id.ID() }

// Certify signs a certificate of kind for identity (and exit id, for CertExit), valid for d.
func (k *OperatorKey) Certify(kind, exitID, identity string, d time.Duration, now time.Time) (string, error) {
	if kind != CertExit && kind != CertClient {
		return "", fmt.Errorf("certificate kind %q: must be %s or %s", truncate(kind, 64), CertExit, CertClient)
	}
	if kind == CertExit {
		if err := ValidID(exitID); err != nil {
			return "", fmt.Errorf("certificate exit id: %w", err)
		}
	} else if exitID != "" {
		return "", errors.New("certificate: a client certificate names no exit id")
	}
	if err := validClientID(identity); err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	if d <= 0 {
		return "", errors.New("certificate: validity must be positive")
	}
	c := Certificate{Version: 1, Kind: kind, ID: exitID, Identity: identity, Expires: now.Add(d).Unix(), Operator: k.Public()}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString(body)
	return enc + "." + k.id.sign([]byte("warren-certificate-v1\n"+enc)), nil
}

// DecodeCertificate decodes a certificate and checks its signature by the operator it names, without
// asking whether that operator is trusted (an exit checks its own certificate this way at start).
func DecodeCertificate(s string, now time.Time) (*Certificate, error) {
	enc, _, ok := strings.Cut(s, ".")
	if !ok {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	body, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	var c Certificate
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	return ParseCertificate(s, []string{c.Operator}, now)
}

// ParseCertificate decodes a certificate and checks its signature by its operator, which must be
// one of operators, and its expiry. It does not check what it certifies: see ExitTrust and
// ClientTrust.
func ParseCertificate(s string, operators []string, now time.Time) (*Certificate, error) {
	enc, sig, ok := strings.Cut(s, ".")
	if !ok || len(s) > maxCertificate {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	body, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	var c Certificate
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Version != 1 {
		return nil, fmt.Errorf("%w: malformed", ErrBadCertificate)
	}
	trusted := false
	for _, op := range operators {
		trusted = trusted || op == c.Operator
	}
	if !trusted {
		return nil, fmt.Errorf("%w: signed by an operator not trusted here", ErrBadCertificate)
	}
	if err := verifySignature(c.Operator, sig, []byte("warren-certificate-v1\n"+enc)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	if now.Unix() >= c.Expires {
		return nil, fmt.Errorf("%w: expired %s", ErrBadCertificate, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// ExitTrust says which exit identities a client accepts. The zero value trusts nothing.
type ExitTrust struct {
	Pins      map[string]string // exit id → the only identity accepted for it
	Operators []string          // operator public keys whose exit certificates are accepted
	AnyExit   bool              // accept any identity for an exit without a pin (declared insecure)
}

// Check reports whether identity may answer for exitID, given the certificate it presented. A pin
// wins over everything: a pinned exit that presents another identity is refused even with a
// valid certificate.
func (t ExitTrust) Check(exitID, identity, cert string, now time.Time) error {
	if pin, ok := t.Pins[exitID]; ok {
		if pin != identity {
			return fmt.Errorf("%w: exit %q answered with identity %s, pinned %s", ErrUntrustedExit, exitID, short(identity), short(pin))
		}
		return nil
	}
	if len(t.Operators) > 0 && cert != "" {
		c, err := ParseCertificate(cert, t.Operators, now)
		if err != nil {
			return err
		}
		if c.Kind != CertExit || c.ID != exitID || c.Identity != identity {
			return fmt.Errorf("%w: the certificate is for %s %q, identity %s", ErrBadCertificate, c.Kind, c.ID, short(c.Identity))
		}
		return nil
	}
	if t.AnyExit {
		return nil
	}
	return fmt.Errorf("%w: exit %q (identity %s) is neither pinned nor operator-certified", ErrUntrustedExit, exitID, short(identity))
}

// Trusts reports whether Check can ever pass for exitID: it is pinned, an operator is trusted, or
// any exit is.
func (t ExitTrust) Trusts(exitID string) bool {
	_, pinned := t.Pins[exitID]
	return pinned || len(t.Operators) > 0 || t.AnyExit
}

// CertifiedClient reports whether cert is a valid client certificate for identity from one of operators.
func CertifiedClient(identity, cert string, operators []string, now time.Time) bool {
	if cert == "" || len(operators) == 0 {
		return false
	}
	c, err := ParseCertificate(cert, operators, now)
	return err == nil && c.Kind == CertClient && c.Identity == identity
}

func verifySignature(signer, sig string, msg []byte) error {
	pub, err := base64.RawURLEncoding.DecodeString(signer)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: bad signer identity", ErrForbidden)
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !ed25519.Verify(pub, msg, s) {
		return fmt.Errorf("%w: bad signature", ErrForbidden)
	}
	return nil
}

func short(id string) string { return truncate(id, 12) }

// ValidIdentity checks that s is an identity's public form (base64url ed25519 public key).
func ValidIdentity(s string) error { return validClientID(s) }
