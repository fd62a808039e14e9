package signaling

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

func signedRequest(t *testing.T, id *Identity, now time.Time) *messages.SessionRequest {
	t.Helper()
	k, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &messages.SessionRequest{SessionID: strings.Repeat("ab", 16), ExitID: "exit-1", WGPublicKey: k.Public().String()}
	id.SignSessionRequest(r, now)
	return r
}

func TestRoundTripAndVerify(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req := signedRequest(t, id, now)
	data, err := Encode(messages.TypeSessionRequest, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := got.(*messages.SessionRequest)
	if !ok || *r != *req {
		t.Fatalf("decoded %#v, want %#v", got, req)
	}
	if err := VerifySessionRequest(r, now); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Any change to a signed field breaks the signature.
	r2 := *r
	r2.ExitID = "exit-2"
	if err := VerifySessionRequest(&r2, now); !errors.Is(err, ErrForbidden) {
		t.Fatalf("tampered request verified: %v", err)
	}
	// Stale timestamps are refused.
	if err := VerifySessionRequest(r, now.Add(3*time.Minute)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("stale request verified: %v", err)
	}
	// Another identity's signature is refused.
	other, _ := NewIdentity()
	r3 := *r
	r3.ClientID = other.ID()
	if err := VerifySessionRequest(&r3, now); !errors.Is(err, ErrForbidden) {
		t.Fatalf("foreign client id verified: %v", err)
	}
	// Identity survives its string form.
	back, err := ParseIdentity(id.String())
	if err != nil || back.ID() != id.ID() {
		t.Fatalf("ParseIdentity: %v, %s != %s", err, back.ID(), id.ID())
	}
	if err := ValidID(id.ID()); err != nil {
		t.Fatalf("client id not subject-safe: %v", err)
	}
}

func TestDecodeRefusals(t *testing.T) {
	id, _ := NewIdentity()
	good := signedRequest(t, id, time.Now())
	goodBody, _ := json.Marshal(good)
	envelope := func(v int, typ string, body string) []byte {
		return []byte(`{"v":` + itoa(v) + `,"type":"` + typ + `","body":` + body + `}`)
	}
	mutate := func(f func(m map[string]any)) string {
		var m map[string]any
		_ = json.Unmarshal(goodBody, &m)
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct {
		name string
		data []byte
		code string
		is   error
	}{
		{"oversized", []byte(`{"v":1,"type":"session.request","body":{"x":"` + strings.Repeat("a", messages.MaxWireSize) + `"}}`), messages.ErrCodeTooLarge, ErrTooLarge},
		{"not json", []byte("hello"), messages.ErrCodeBadRequest, ErrInvalid},
		{"empty", nil, messages.ErrCodeBadRequest, ErrInvalid},
		{"version 2", envelope(2, messages.TypeSessionRequest, string(goodBody)), messages.ErrCodeVersion, ErrVersion},
		{"version 0", envelope(0, messages.TypeSessionRequest, string(goodBody)), messages.ErrCodeVersion, ErrVersion},
		{"unknown type", envelope(1, "session.steal", string(goodBody)), messages.ErrCodeUnknownType, ErrUnknownType},
		{"no body", []byte(`{"v":1,"type":"session.request"}`), messages.ErrCodeBadRequest, ErrInvalid},
		{"unknown envelope field", []byte(`{"v":1,"type":"session.request","body":` + string(goodBody) + `,"extra":1}`), messages.ErrCodeBadRequest, ErrInvalid},
		{"unknown body field", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { m["admin"] = true })), messages.ErrCodeBadRequest, ErrInvalid},
		{"trailing data", append(envelope(1, messages.TypeSessionRequest, string(goodBody)), []byte(" {}")...), messages.ErrCodeBadRequest, ErrInvalid},
		{"bad session id", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { m["session_id"] = "xyz" })), messages.ErrCodeBadRequest, ErrInvalid},
		{"bad exit id", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { m["exit_id"] = "a.b>" })), messages.ErrCodeBadRequest, ErrInvalid},
		{"bad key", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { m["wg_public_key"] = "AAAA" })), messages.ErrCodeBadRequest, ErrInvalid},
		{"no timestamp", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { delete(m, "ts") })), messages.ErrCodeBadRequest, ErrInvalid},
		{"wrong field type", envelope(1, messages.TypeSessionRequest, mutate(func(m map[string]any) { m["ts"] = "soon" })), messages.ErrCodeBadRequest, ErrInvalid},
		{"bad response mtu", envelope(1, messages.TypeSessionResponse, `{"session_id":"`+strings.Repeat("ab", 16)+`","exit_wg_public_key":"`+good.WGPublicKey+`","endpoint":"127.0.0.1:1","client_addresses":["10.0.0.2"],"exit_addresses":["10.0.0.1"],"connect_port":7070,"mtu":100}`), messages.ErrCodeBadRequest, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(c.data)
			if err == nil {
				t.Fatalf("decoded %#v", got)
			}
			var we *WireError
			if !errors.As(err, &we) || we.Code != c.code || !errors.Is(err, c.is) {
				t.Fatalf("err %v (code %v), want code %s and %v", err, we, c.code, c.is)
			}
			// The refusal itself must be a valid message that the other side can decode.
			back, derr := Decode(EncodeError(we.Code, we.Message))
			if derr != nil {
				t.Fatalf("refusal does not decode: %v", derr)
			}
			if er := back.(*messages.ErrorResponse); er.Code != c.code {
				t.Fatalf("refusal code %s", er.Code)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	k, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKey(k.String())
	if err != nil || back != k {
		t.Fatalf("ParseKey: %v", err)
	}
	if k.Public() == k || k.Public() == (Key{}) {
		t.Fatal("public key not derived")
	}
	// RFC 7748 §6.1 test vector (Alice).
	priv, _ := ParseKey("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
	if got := priv.Public().String(); got != "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=" {
		t.Fatalf("public key %s", got)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 44)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func itoa(v int) string { return string(rune('0' + v)) }
