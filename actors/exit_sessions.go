package actors

// The exit's address pool and its sweep of sessions whose clients went silent (they died without
// a goodbye).

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// armSweep schedules the next idle-session sweep.
func (e *exitActor) armSweep(ctx actor.Context) {
	if e.cfg.SessionIdle <= 0 || e.stopping { // no new timer once stopping
		return
	}
	e.sweepT = sendAfter(ctx, max(e.cfg.SessionIdle/4, minCadence), &sweepSessions{})
}

// sweep releases sessions whose client has sent nothing for SessionIdle: a client that died
// without a goodbye would otherwise keep its WireGuard peer and address for the exit's lifetime.
func (e *exitActor) sweep(ctx actor.Context) {
	f := ctx.RequestFuture(e.device, &getPeerStats{}, peerStatsWait)
	reenter(ctx, f, func(res any, err error) {
		if e.stopped() {
			return
		}
		defer e.armSweep(ctx)
		st, ok := res.(*peerStats)
		if err != nil || !ok || st.err != nil {
			return
		}
		now := time.Now()
		for _, s := range e.sessions {
			rx, seen := st.rxByPeer[s.key]
			if seen && rx != s.lastRx {
				s.lastRx, s.lastActive = rx, now
				continue
			}
			if idle := now.Sub(s.lastActive); idle >= e.cfg.SessionIdle {
				e.cfg.Logger.Info("session released: client silent", "session", s.id, "client", s.clientID, "idle", idle.Round(logPrecision))
				ctx.Stop(s.peer) // Terminated frees its address and key
			}
		}
	})
}

var errPoolExhausted = errors.New("tunnel address pool exhausted")

// allocate takes the next free address of the subnet, wrapping around once.
func (e *exitActor) allocate() (netip.Addr, error) {
	first := e.cfg.Subnet.Masked().Addr().Next()
	size := 1 << min(e.cfg.Subnet.Addr().BitLen()-e.cfg.Subnet.Bits(), 20)
	a := e.next
	for range size {
		if !a.IsValid() || !e.cfg.Subnet.Contains(a) {
			a = first
		}
		if !e.used[a] && !isBroadcast(e.cfg.Subnet, a) {
			e.used[a], e.next = true, a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("%w: %s", errPoolExhausted, e.cfg.Subnet)
}

func isBroadcast(p netip.Prefix, a netip.Addr) bool {
	return a.Is4() && p.Bits() < 31 && !p.Contains(a.Next())
}
