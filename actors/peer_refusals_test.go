package actors

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// TestRefusalsRemembered: the latest code per flow (source port and destination), flows to one
// destination from two ports apart, an IPv4-mapped destination as its IPv4 form, the oldest
// forgotten past refusalsKept, none older than refusalAge, connection refused when nothing is known.
func TestRefusalsRemembered(t *testing.T) {
	var r refusals
	now := time.Now()
	dst := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 80)
	}
	r.add(keyOf(1000, dst(0)), messages.ReplyNotAllowed, now)
	r.add(keyOf(1000, dst(0)), messages.ReplyHostUnreachable, now) // the latest wins
	r.add(keyOf(1001, dst(0)), messages.ReplyTTLExpired, now)      // another flow to the same place
	for _, tc := range []struct {
		flow flowKey
		at   time.Time
		want messages.ReplyCode
	}{
		{keyOf(1000, dst(0)), now, messages.ReplyHostUnreachable},
		{keyOf(1001, dst(0)), now, messages.ReplyTTLExpired},
		{keyOf(1000, netip.MustParseAddrPort("[::ffff:192.0.2.0]:80")), now, messages.ReplyHostUnreachable},
		{keyOf(1002, dst(0)), now, messages.ReplyConnectionRefused},
		{keyOf(1000, dst(1)), now, messages.ReplyConnectionRefused},
		{keyOf(1000, dst(0)), now.Add(refusalAge + time.Second), messages.ReplyConnectionRefused},
	} {
		if got := r.code(tc.flow, tc.at); got != tc.want {
			t.Errorf("flow %+v: code %v, want %v", tc.flow, got, tc.want)
		}
	}
	for i := 1; i <= refusalsKept; i++ {
		r.add(keyOf(2000, dst(i)), messages.ReplyTTLExpired, now)
	}
	if len(r) != refusalsKept {
		t.Errorf("%d records kept, want %d", len(r), refusalsKept)
	}
	if got := r.code(keyOf(1000, dst(0)), now); got != messages.ReplyConnectionRefused {
		t.Errorf("oldest record: code %v, want it forgotten", got)
	}
	if got := r.code(keyOf(2000, dst(refusalsKept)), now); got != messages.ReplyTTLExpired {
		t.Errorf("newest record: code %v, want TTL expired", got)
	}
}
