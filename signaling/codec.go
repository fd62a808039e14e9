package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/warren-tunnel/warren/messages"
)

// Sentinel errors of decoding; a *WireError wraps one of them.
var (
	ErrInvalid     = errors.New("invalid message")
	ErrTooLarge    = errors.New("message too large")
	ErrVersion     = errors.New("unsupported wire version")
	ErrUnknownType = errors.New("unknown message type")
)

// WireError is a refusal carried over the wire, or a decoding failure about to be answered with one.
type WireError struct {
	Code    string // one of messages.ErrCode*
	Message string
	cause   error
}

func (e *WireError) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the sentinel the code stands for, so errors.Is works on both sides of the wire.
func (e *WireError) Unwrap() error {
	if e.cause != nil {
		return e.cause
	}
	switch e.Code {
	case messages.ErrCodeBadRequest:
		return ErrInvalid
	case messages.ErrCodeTooLarge:
		return ErrTooLarge
	case messages.ErrCodeVersion:
		return ErrVersion
	case messages.ErrCodeUnknownType:
		return ErrUnknownType
	}
	return nil
}

func wireErr(code string, cause error, format string, args ...any) *WireError {
	return &WireError{Code: code, Message: fmt.Sprintf(format, args...), cause: cause}
}

// Encode wraps body in a versioned envelope. It refuses a result over messages.MaxWireSize.
func Encode(typ string, body any) ([]byte, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	data, err := json.Marshal(messages.Envelope{Version: messages.WireVersion, Type: typ, Body: raw})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	if len(data) > messages.MaxWireSize {
		return nil, fmt.Errorf("encode %s: %d bytes: %w", typ, len(data), ErrTooLarge)
	}
	return data, nil
}

// EncodeError encodes a refusal.
func EncodeError(code, message string) []byte {
	if len(message) > 1024 {
		message = message[:1024]
	}
	data, err := Encode(messages.TypeError, messages.ErrorResponse{Code: code, Message: message})
	if err != nil { // cannot happen for a bounded message; answer with the bare code
		data, _ = Encode(messages.TypeError, messages.ErrorResponse{Code: code})
	}
	return data
}

// Decode checks size, version and type, decodes the body strictly (unknown fields are refused)
// and validates it. It returns a pointer to one of the messages types. Any failure is a *WireError
// that says why; nothing has acted on the message.
func Decode(data []byte) (any, error) {
	if len(data) > messages.MaxWireSize {
		return nil, wireErr(messages.ErrCodeTooLarge, ErrTooLarge, "%d bytes, limit %d", len(data), messages.MaxWireSize)
	}
	var env messages.Envelope
	if err := strictUnmarshal(data, &env); err != nil {
		return nil, wireErr(messages.ErrCodeBadRequest, ErrInvalid, "envelope: %v", err)
	}
	if env.Version != messages.WireVersion {
		return nil, wireErr(messages.ErrCodeVersion, ErrVersion, "version %d, want %d", env.Version, messages.WireVersion)
	}
	var body any
	switch env.Type {
	case messages.TypeSessionRequest:
		body = new(messages.SessionRequest)
	case messages.TypeSessionResponse:
		body = new(messages.SessionResponse)
	case messages.TypeSessionClose:
		body = new(messages.SessionClose)
	case messages.TypeSessionsPing:
		body = new(messages.SessionsPing)
	case messages.TypeSessionsPong:
		body = new(messages.SessionsPong)
	case messages.TypeError:
		body = new(messages.ErrorResponse)
	case messages.TypeExitAnnouncement:
		body = new(messages.ExitAnnouncement)
	case messages.TypeExitsDiscover:
		body = new(messages.ExitsDiscover)
	case messages.TypeSessionDraining:
		body = new(messages.SessionDraining)
	default:
		return nil, wireErr(messages.ErrCodeUnknownType, ErrUnknownType, "type %q", truncate(env.Type, 64))
	}
	if len(env.Body) == 0 {
		return nil, wireErr(messages.ErrCodeBadRequest, ErrInvalid, "%s: no body", env.Type)
	}
	if err := strictUnmarshal(env.Body, body); err != nil {
		return nil, wireErr(messages.ErrCodeBadRequest, ErrInvalid, "%s: %v", env.Type, err)
	}
	if err := Validate(body); err != nil {
		return nil, wireErr(messages.ErrCodeBadRequest, ErrInvalid, "%s: %v", env.Type, err)
	}
	return body, nil
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
