package signaling

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// TestErrorsEchoAShortPrefix: an error about a huge value repeats a short prefix of it, never the
// value (a 10 MB id would otherwise travel into logs whole).
func TestErrorsEchoAShortPrefix(t *testing.T) {
	huge := strings.Repeat("A", 10<<20) + "!"
	op, err := NewOperatorKey()
	if err != nil {
		t.Fatal(err)
	}
	_, certErr := op.Certify(huge, "", "", time.Hour, time.Now())
	cases := map[string]error{
		"ValidID":       ValidID(huge),
		"ValidIdentity": ValidIdentity(huge),
		"Certify kind":  certErr,
		"endpoint":      Validate(&messages.SessionResponse{Endpoint: huge}),
		"addresses": Validate(&messages.SessionResponse{Endpoint: "127.0.0.1:1", ConnectPort: 1, MTU: 1420,
			SessionID: strings.Repeat("ab", 16), ExitWGPublicKey: mustKey(t), ClientAddresses: []string{huge}}),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: accepted a 10 MB value", name)
			continue
		}
		if msg := err.Error(); len(msg) > 256 || !strings.Contains(msg, "AAAA") {
			t.Errorf("%s: message of %d bytes (want a short prefix of the value): %.300s", name, len(msg), msg)
		}
	}
	if !errors.Is(cases["ValidID"], ErrInvalid) {
		t.Errorf("ValidID: %v does not wrap ErrInvalid", cases["ValidID"])
	}
}
