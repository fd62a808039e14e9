package signaling

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/warren-tunnel/warren/messages"
)

// Limits on field contents, beyond the overall size cap.
const (
	maxAddresses   = 8
	maxReason      = 256
	maxErrorText   = 1024
	maxCertificate = 1024
	minMTU         = 1280 // IPv6 minimum; also safe for IPv4
	maxMTU         = 9000
)

// Validate checks every field of a decoded message. It is called by Decode; callers that build
// messages themselves may call it before sending.
func Validate(m any) error {
	switch m := m.(type) {
	case *messages.SessionRequest:
		return firstErr(
			validSessionID(m.SessionID),
			ValidID(m.ExitID),
			validClientID(m.ClientID),
			validKey("wg_public_key", m.WGPublicKey),
			positive("ts", m.Timestamp),
			validSignature(m.Signature),
			validCertField(m.Certificate),
		)
	case *messages.SessionResponse:
		if _, err := netip.ParseAddrPort(m.Endpoint); err != nil {
			return fmt.Errorf("endpoint %q: not an IP:port", truncate(m.Endpoint, 64))
		}
		if m.ConnectPort == 0 {
			return fmt.Errorf("connect_port: must not be 0")
		}
		if m.MTU < minMTU || m.MTU > maxMTU {
			return fmt.Errorf("mtu: %d not in [%d, %d]", m.MTU, minMTU, maxMTU)
		}
		return firstErr(
			validSessionID(m.SessionID),
			validKey("exit_wg_public_key", m.ExitWGPublicKey),
			validAddrs("client_addresses", m.ClientAddresses),
			validAddrs("exit_addresses", m.ExitAddresses),
			validClientID(m.ExitIdentity),
			ValidID(m.ExitID),
			validClientID(m.ClientID),
			validCertField(m.Certificate),
			positive("ts", m.Timestamp),
			validSignature(m.Signature),
		)
	case *messages.SessionClose:
		if len(m.Reason) > maxReason {
			return fmt.Errorf("reason: longer than %d", maxReason)
		}
		return firstErr(validSessionID(m.SessionID), validClientID(m.Signer), positive("ts", m.Timestamp), validSignature(m.Signature))
	case *messages.SessionsPing:
		if len(m.SessionIDs) == 0 {
			return fmt.Errorf("session_ids: empty")
		}
		return firstErr(validSessionIDs("session_ids", m.SessionIDs), validNonce(m.Nonce), validClientID(m.ClientID),
			positive("ts", m.Timestamp), validSignature(m.Signature))
	case *messages.SessionsPong:
		return firstErr(validSessionIDs("known", m.Known), validNonce(m.Nonce), ValidID(m.ExitID), validClientID(m.ClientID),
			validClientID(m.Signer), positive("ts", m.Timestamp), validSignature(m.Signature))
	case *messages.ErrorResponse:
		if m.Code == "" || len(m.Code) > 64 {
			return fmt.Errorf("code: must be 1-64 characters")
		}
		if len(m.Message) > maxErrorText {
			return fmt.Errorf("message: longer than %d", maxErrorText)
		}
		if m.Signer == "" && m.Signature == "" && m.Timestamp == 0 && m.SessionID == "" && m.ClientID == "" &&
			m.Certificate == "" && m.ExitID == "" && m.Nonce == "" {
			return nil // an unsigned refusal: readable, never acted on
		}
		if m.Nonce != "" {
			if err := validNonce(m.Nonce); err != nil {
				return err
			}
		}
		return firstErr(validSessionID(m.SessionID), ValidID(m.ExitID), validClientID(m.ClientID), validClientID(m.Signer),
			positive("ts", m.Timestamp), validSignature(m.Signature), validCertField(m.Certificate))
	case *messages.ExitAnnouncement:
		return validateAnnouncement(m)
	case *messages.ExitsDiscover:
		return validNonce(m.Nonce)
	case *messages.SessionDraining:
		return validateDraining(m)
	default:
		return fmt.Errorf("%T: %w", m, ErrUnknownType)
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func validSessionID(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 16 {
		return fmt.Errorf("session_id: must be 32 hex characters")
	}
	return nil
}

// validClientID accepts an identity only in its canonical form (the one ID prints): base64url
// decoding skips line breaks and ignores trailing bits, so other spellings of one key would slip
// past exact comparisons and into the signed bytes.
func validClientID(s string) error {
	if b, err := base64.RawURLEncoding.DecodeString(s); err != nil || len(b) != 32 || base64.RawURLEncoding.EncodeToString(b) != s {
		return fmt.Errorf("identity %q: must be a base64url ed25519 public key", truncate(s, 64))
	}
	return nil
}

func validNonce(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 16 {
		return fmt.Errorf("nonce: must be 32 hex characters")
	}
	return nil
}

func validCertField(s string) error {
	if len(s) > maxCertificate {
		return fmt.Errorf("cert: longer than %d", maxCertificate)
	}
	return nil
}

func validKey(field, s string) error {
	k, err := ParseKey(s)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if k.String() != s {
		return fmt.Errorf("%s: not in canonical base64", field)
	}
	return nil
}

func validSignature(s string) error {
	if b, err := base64.RawURLEncoding.DecodeString(s); err != nil || len(b) != 64 || base64.RawURLEncoding.EncodeToString(b) != s {
		return fmt.Errorf("sig: must be a base64url ed25519 signature")
	}
	return nil
}

func positive(field string, v int64) error {
	if v <= 0 {
		return fmt.Errorf("%s: must be positive", field)
	}
	return nil
}

func validAddrs(field string, addrs []string) error {
	if len(addrs) == 0 || len(addrs) > maxAddresses {
		return fmt.Errorf("%s: need 1-%d addresses", field, maxAddresses)
	}
	for _, a := range addrs {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("%s: %q is not an IP address", field, truncate(a, 64))
		}
	}
	return nil
}

// validSessionIDs: at most messages.MaxPingSessions session ids, each valid, none twice.
func validSessionIDs(field string, ids []string) error {
	if len(ids) > messages.MaxPingSessions {
		return fmt.Errorf("%s: %d sessions, limit %d", field, len(ids), messages.MaxPingSessions)
	}
	seen := make(map[string]struct{}, len(ids))
	for i, id := range ids {
		if err := validSessionID(id); err != nil {
			return fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		if _, dup := seen[id]; dup {
			return fmt.Errorf("%s[%d]: %s twice", field, i, id)
		}
		seen[id] = struct{}{}
	}
	return nil
}
