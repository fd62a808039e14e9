package actors

// Closing a tunnel: the drain (listeners closed at once, connections given the drain timeout,
// then ended), Closing and Failed, and the release in Stopping (listeners, then the goodbyes;
// children stop after).

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

type tunnelDrainExpired struct{}

// drain stops accepting, lets active connections finish for the drain timeout, ends the rest with
// drain_timeout (graceful, then forced after the grace period), and then closes.
func (t *tunnelActor) drain(ctx actor.Context, m *messages.CloseTunnel) {
	d := t.drainTimeout(m.Drain)
	t.drainWhy = m.Why
	switch {
	case t.drainWhy != "":
	case d == 0:
		t.drainWhy = messages.EndTunnelClosed
	default:
		t.drainWhy = messages.EndDrainTimeout
	}
	if t.drainWhy == messages.EndEngineShutdown {
		t.stopWhy.Store(&t.drainWhy)
	}
	t.enter(ctx, messages.StateDraining, reasonOr(m.Reason))
	t.closeListeners()
	for _, l := range t.legs {
		if l != t.current && !l.draining {
			t.releaseLeg(ctx, l) // a leg still coming up is not wanted any more
		}
	}
	if len(t.conns) == 0 {
		t.finishClose(ctx)
		return
	}
	t.drainT = sendAfter(ctx, d, &tunnelDrainExpired{})
}

func (t *tunnelActor) drainTimeout(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return t.cfg.DrainTimeout
	case d < 0:
		return 0
	}
	return d
}

// finishClose ends a drain: everything left is released by stopping.
func (t *tunnelActor) finishClose(ctx actor.Context) {
	t.closeNow(ctx, "drained")
}

func (t *tunnelActor) closeNow(ctx actor.Context, reason string) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	t.enter(ctx, messages.StateClosing, reason)
	ctx.Stop(ctx.Self())
}

func (t *tunnelActor) fail(ctx actor.Context, err error) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	t.failErr = err
	t.enter(ctx, messages.StateFailed, err.Error())
	ctx.Stop(ctx.Self())
}

func (t *tunnelActor) onStopping(ctx actor.Context) {
	t.stopping = true
	if t.state != messages.StateClosing && t.state != messages.StateFailed {
		// stopped by its parent: the engine is shutting down without a drain
		why := messages.EndEngineShutdown
		t.stopWhy.Store(&why)
		t.enter(ctx, messages.StateClosing, "engine shutdown")
	}
	for _, tm := range []*time.Timer{t.drainT, t.retryT, t.parkT} {
		if tm != nil {
			tm.Stop()
		}
	}
	for _, p := range t.parked {
		_ = p.c.Close()
	}
	t.parked = nil
	// Local resources first (bounded wait: the accept loops end when their listener closes), then
	// the goodbyes, which only send messages.
	t.closeListeners()
	for _, l := range t.listeners {
		if l.end != nil {
			<-l.end
		}
	}
	// The legs say goodbye as they stop (children stop after this).
}

func reasonOr(r string) string {
	if r == "" {
		return "closed by owner"
	}
	return r
}

// onStopped: everything is released now; only now do the opener (on failure), the waiter and the
// closers hear back.
func (t *tunnelActor) onStopped(ctx actor.Context) {
	t.enter(ctx, messages.StateClosed, "released")
	err := t.failErr
	if err == nil {
		err = fmt.Errorf("%w: before it came up", ErrTunnelClosed)
	}
	t.reply(ctx, err)
	t.answerWaiter(ctx, fmt.Errorf("%w", ErrTunnelClosed))
	for _, c := range t.closers {
		ctx.Send(c, &messages.CloseTunnelResponse{})
	}
}
