package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// TestMalformedSignalingIsRefused sends bad messages to a live exit over real NATS: each is answered
// with an error that says why, and none opens a session.
func TestMalformedSignalingIsRefused(t *testing.T) {
	e := startExitEngine(t, "guarded", listenTCP)
	nc, err := nats.Connect(e.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subject := signaling.ExitSubject("guarded")

	id, _ := signaling.NewIdentity()
	key, _ := signaling.NewPrivateKey()
	valid := func() *messages.SessionRequest {
		r := &messages.SessionRequest{SessionID: strings.Repeat("cd", 16), ExitID: "guarded", WGPublicKey: key.Public().String()}
		id.SignSessionRequest(r, time.Now())
		return r
	}
	encode := func(typ string, body any) []byte {
		b, err := signaling.Encode(typ, body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw := func(v int, typ string, body any) []byte {
		b, _ := json.Marshal(body)
		out, _ := json.Marshal(map[string]any{"v": v, "type": typ, "body": json.RawMessage(b)})
		return out
	}
	badSig := valid()
	badSig.Signature = strings.Repeat("A", 86)
	stale := valid()
	id.SignSessionRequest(stale, time.Now().Add(-time.Hour))
	wrongExit := valid()
	wrongExit.ExitID = "other"
	id.SignSessionRequest(wrongExit, time.Now())

	cases := []struct {
		name string
		data []byte
		code string
	}{
		{"garbage", []byte("\x00\x01not json"), messages.ErrCodeBadRequest},
		{"oversized", []byte(`{"v":1,"type":"session.request","body":"` + strings.Repeat("x", messages.MaxWireSize+1) + `"}`), messages.ErrCodeTooLarge},
		{"future version", raw(9, messages.TypeSessionRequest, valid()), messages.ErrCodeVersion},
		{"unknown type", raw(1, "tunnel.hijack", map[string]string{"a": "b"}), messages.ErrCodeUnknownType},
		{"response sent as request", encode(messages.TypeError, messages.ErrorResponse{Code: "x"}), messages.ErrCodeUnknownType},
		{"missing fields", raw(1, messages.TypeSessionRequest, map[string]string{"session_id": "00"}), messages.ErrCodeBadRequest},
		{"bad signature", encode(messages.TypeSessionRequest, badSig), messages.ErrCodeForbidden},
		{"stale timestamp", encode(messages.TypeSessionRequest, stale), messages.ErrCodeForbidden},
		{"wrong exit", encode(messages.TypeSessionRequest, wrongExit), messages.ErrCodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := nc.Request(subject, c.data, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			body, err := signaling.Decode(msg.Data)
			if err != nil {
				t.Fatalf("refusal does not decode: %v", err)
			}
			er, ok := body.(*messages.ErrorResponse)
			if !ok || er.Code != c.code {
				t.Fatalf("reply %#v, want error code %s", body, c.code)
			}
		})
	}
	// A message with no reply subject is dropped, not acted on.
	if err := nc.Publish(subject, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	// No session was opened by any of it; a valid request still works (state unchanged).
	msg, err := nc.Request(subject, encode(messages.TypeSessionRequest, valid()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	body, err := signaling.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok := body.(*messages.SessionResponse)
	if !ok || len(resp.ClientAddresses) != 1 || resp.ClientAddresses[0] != "10.77.0.2" {
		t.Fatalf("valid request got %#v; the first address must still be free", body)
	}
	// Another session with the same WireGuard key would take over the first one's peer: refused.
	again := valid()
	again.SessionID = strings.Repeat("ef", 16)
	id.SignSessionRequest(again, time.Now())
	msg, err = nc.Request(subject, encode(messages.TypeSessionRequest, again), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := signaling.Decode(msg.Data); body == nil || body.(*messages.ErrorResponse).Code != messages.ErrCodeBadRequest {
		t.Fatalf("duplicate WireGuard key: reply %#v, want bad_request", body)
	}
	opened := 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for opened == 0 {
		select {
		case ev := <-e.Events():
			if ev.Kind == engine.EventSessionOpened {
				opened++
			}
		case <-ctx.Done():
			t.Fatal("no session_opened event for the valid request")
		}
	}
	select {
	case ev := <-e.Events():
		if ev.Kind == engine.EventSessionOpened {
			t.Fatalf("a second session was opened: %+v", ev)
		}
	default:
	}
}
