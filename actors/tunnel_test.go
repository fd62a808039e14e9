package actors

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// A goodbye's reason is cut to fit; the cut must keep the signature valid after a JSON round trip.
func TestGoodbyeReasonTruncationKeepsSignature(t *testing.T) {
	id, _ := signaling.NewIdentity()
	for _, reason := range []string{strings.Repeat("é", 150), strings.Repeat("x", 199) + "日本", "bad \xff utf8", "short"} {
		cut := truncateUTF8(reason, 200)
		if len(cut) > 200 || !utf8.ValidString(cut) {
			t.Fatalf("truncateUTF8 gave %d bytes, valid=%v", len(cut), utf8.ValidString(cut))
		}
		c := &messages.SessionClose{SessionID: strings.Repeat("ab", 16), Reason: cut}
		id.SignSessionClose(c, time.Now())
		data, err := signaling.Encode(messages.TypeSessionClose, c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := signaling.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := signaling.VerifySessionClose(back.(*messages.SessionClose), time.Now()); err != nil {
			t.Fatalf("reason %q: %v", reason, err)
		}
	}
}
