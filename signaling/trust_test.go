package signaling

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

func TestCertificates(t *testing.T) {
	op, _ := NewOperatorKey()
	other, _ := NewOperatorKey()
	exit, _ := NewIdentity()
	now := time.Now()
	cert, err := op.Certify(CertExit, "exit-1", exit.ID(), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	trust := ExitTrust{Operators: []string{op.Public()}}
	if err := trust.Check("exit-1", exit.ID(), cert, now); err != nil {
		t.Fatalf("valid certificate refused: %v", err)
	}
	rogue, _ := NewIdentity()
	for name, c := range map[string]struct {
		trust          ExitTrust
		exitID, id     string
		cert           string
		at             time.Time
		want           error
		wantSubstrings string
	}{
		"another exit id":          {trust, "exit-2", exit.ID(), cert, now, ErrBadCertificate, "certificate is for"},
		"another identity":         {trust, "exit-1", rogue.ID(), cert, now, ErrBadCertificate, "identity"},
		"expired":                  {trust, "exit-1", exit.ID(), cert, now.Add(2 * time.Hour), ErrBadCertificate, "expired"},
		"untrusted operator":       {ExitTrust{Operators: []string{other.Public()}}, "exit-1", exit.ID(), cert, now, ErrBadCertificate, "not trusted"},
		"tampered":                 {trust, "exit-1", exit.ID(), strings.Replace(cert, cert[5:9], "AAAA", 1), now, ErrBadCertificate, ""},
		"no certificate":           {trust, "exit-1", exit.ID(), "", now, ErrUntrustedExit, "neither pinned"},
		"nothing trusted":          {ExitTrust{}, "exit-1", exit.ID(), cert, now, ErrUntrustedExit, ""},
		"pin wins over the cert":   {ExitTrust{Pins: map[string]string{"exit-1": rogue.ID()}, Operators: []string{op.Public()}}, "exit-1", exit.ID(), cert, now, ErrUntrustedExit, "pinned"},
		"a client cert as an exit": {trust, "exit-1", exit.ID(), mustCertify(t, op, CertClient, "", exit.ID()), now, ErrBadCertificate, "client"},
	} {
		err := c.trust.Check(c.exitID, c.id, c.cert, c.at)
		if !errors.Is(err, c.want) || !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), c.wantSubstrings) {
			t.Errorf("%s: %v, want %v containing %q", name, err, c.want, c.wantSubstrings)
		}
	}
	if err := (ExitTrust{AnyExit: true}).Check("exit-1", rogue.ID(), "", now); err != nil {
		t.Errorf("any exit: %v", err)
	}
	clientCert := mustCertify(t, op, CertClient, "", rogue.ID())
	if !CertifiedClient(rogue.ID(), clientCert, []string{op.Public()}, now) || CertifiedClient(exit.ID(), clientCert, []string{op.Public()}, now) ||
		CertifiedClient(rogue.ID(), clientCert, []string{other.Public()}, now) || CertifiedClient(rogue.ID(), cert, []string{op.Public()}, now) {
		t.Error("CertifiedClient accepts what it must not, or refuses its own certificate")
	}
}

func mustCertify(t *testing.T, op *OperatorKey, kind, exitID, id string) string {
	t.Helper()
	c, err := op.Certify(kind, exitID, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every signed message survives the wire and verifies; any change to a signed field breaks it;
// a signature of one kind never verifies as another.
func TestSignedMessagesRoundTrip(t *testing.T) {
	exit, _ := NewIdentity()
	client, _ := NewIdentity()
	now := time.Now()
	sid, nonce := strings.Repeat("ab", 16), strings.Repeat("cd", 16)
	resp := &messages.SessionResponse{SessionID: sid, ExitWGPublicKey: mustKey(t), Endpoint: "127.0.0.1:51820",
		ClientAddresses: []string{"10.77.0.2"}, ExitAddresses: []string{"10.77.0.1"}, ConnectPort: 7070, MTU: 1420,
		ExitID: "exit-1", ClientID: client.ID()}
	exit.SignSessionResponse(resp, now)
	refusal := &messages.ErrorResponse{Code: messages.ErrCodeForbidden, Message: "no", SessionID: sid, ClientID: client.ID(), ExitID: "exit-1"}
	exit.SignError(refusal, now)
	sid2 := strings.Repeat("ef", 16)
	ping := &messages.SessionsPing{SessionIDs: []string{sid, sid2}, Nonce: nonce}
	client.SignSessionsPing(ping, now)
	pong := &messages.SessionsPong{Nonce: nonce, ExitID: "exit-1", ClientID: client.ID(), Known: []string{sid}}
	exit.SignSessionsPong(pong, now)
	for _, c := range []struct {
		typ    string
		msg    any
		verify func(any) error
		tamper func(any)
	}{
		{messages.TypeSessionResponse, resp, func(m any) error { return VerifySessionResponse(m.(*messages.SessionResponse), now) },
			func(m any) { m.(*messages.SessionResponse).Endpoint = "127.0.0.1:9" }},
		{messages.TypeError, refusal, func(m any) error { return VerifyError(m.(*messages.ErrorResponse), now) },
			func(m any) { m.(*messages.ErrorResponse).ExitID = "exit-2" }},
		{messages.TypeSessionsPing, ping, func(m any) error { return VerifySessionsPing(m.(*messages.SessionsPing), now) },
			func(m any) { m.(*messages.SessionsPing).Nonce = strings.Repeat("ef", 16) }},
		{messages.TypeSessionsPing, ping, func(m any) error { return VerifySessionsPing(m.(*messages.SessionsPing), now) },
			func(m any) { m.(*messages.SessionsPing).SessionIDs = []string{sid} }},
		{messages.TypeSessionsPong, pong, func(m any) error { return VerifySessionsPong(m.(*messages.SessionsPong), now) },
			func(m any) { m.(*messages.SessionsPong).ClientID = exit.ID() }},
		{messages.TypeSessionsPong, pong, func(m any) error { return VerifySessionsPong(m.(*messages.SessionsPong), now) },
			func(m any) { m.(*messages.SessionsPong).Known = []string{sid, sid2} }},
	} {
		data, err := Encode(c.typ, c.msg)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		if err := c.verify(back); err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		c.tamper(back)
		if err := c.verify(back); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: a tampered message verified (%v)", c.typ, err)
		}
	}
	// A pong's signature is not a response's, though both are signed by the exit.
	forged := *pong
	forged.Known = nil
	forged.Signature = resp.Signature
	if err := VerifySessionsPong(&forged, now); err == nil {
		t.Error("a response's signature verified as a pong's")
	}
	if err := VerifyError(&messages.ErrorResponse{Code: "forbidden"}, now); !errors.Is(err, ErrUnsigned) {
		t.Errorf("an unsigned refusal: %v", err)
	}
	// Only canonical spellings of identities, keys and signatures pass validation: base64url
	// decoding skips line breaks and trailing bits, which would let one key have many names.
	for name, mutate := range map[string]func(*messages.SessionsPong){
		"line break in the signer": func(p *messages.SessionsPong) { p.Signer = p.Signer[:10] + "\n" + p.Signer[10:] },
		"trailing bits":            func(p *messages.SessionsPong) { p.Signer = p.Signer[:42] + "B" },
		"signature with a break":   func(p *messages.SessionsPong) { p.Signature = p.Signature[:5] + "\r\n" + p.Signature[5:] },
	} {
		q := *pong
		mutate(&q)
		if err := Validate(&q); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
	// Length prefixes: moving bytes from one free-text field into the next changes what is signed.
	a := signingBytes("x", "ab\n2:c", "d")
	b := signingBytes("x", "ab", "c\n1:d")
	if string(a) == string(b) {
		t.Error("two field lists sign the same bytes")
	}
}

func mustKey(t *testing.T) string {
	k, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().String()
}
