package actors

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// TestRefusalsRemembered: the latest code per destination, the oldest forgotten past
// refusalsKept, none older than refusalAge, connection refused when nothing is known.
func TestRefusalsRemembered(t *testing.T) {
	var r refusals
	now := time.Now()
	dst := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 80)
	}
	r.add(dst(0), messages.ReplyNotAllowed, now)
	r.add(dst(0), messages.ReplyHostUnreachable, now) // the latest wins
	if got := r.code(dst(0), now); got != messages.ReplyHostUnreachable {
		t.Errorf("code %v, want host unreachable", got)
	}
	if got := r.code(dst(1), now); got != messages.ReplyConnectionRefused {
		t.Errorf("unknown destination: code %v, want connection refused", got)
	}
	if got := r.code(dst(0), now.Add(refusalAge+time.Second)); got != messages.ReplyConnectionRefused {
		t.Errorf("stale record: code %v, want connection refused", got)
	}
	for i := 1; i <= refusalsKept; i++ {
		r.add(dst(i), messages.ReplyTTLExpired, now)
	}
	if len(r) != refusalsKept {
		t.Errorf("%d records kept, want %d", len(r), refusalsKept)
	}
	if got := r.code(dst(0), now); got != messages.ReplyConnectionRefused {
		t.Errorf("oldest record: code %v, want it forgotten", got)
	}
	if got := r.code(dst(refusalsKept), now); got != messages.ReplyTTLExpired {
		t.Errorf("newest record: code %v, want TTL expired", got)
	}
}
