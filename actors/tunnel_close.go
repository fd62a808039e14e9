package actors

// Closing a tunnel: the drain (listeners closed at once, connections given the drain timeout,
// then ended), Closing and Failed, and the release in Stopping (listeners; then the children:
// each leg says goodbye to its exit as it stops).
//
//	Up, Degraded, or a Switching with a leg serving ──CloseTunnel──▶ Draining
//	Draining ──last connection ended, drain timeout (+ grace), or a CloseTunnel with no drain──┐
//	Negotiating, Handshaking, Reconnecting, Reconfiguring,                                     │
//	  or a Switching with no leg serving ──CloseTunnel─────────────────────────────────────────┴──▶ Closing ──┐
//	a proxy port in use, or the leg it needed failed ───────────────────────────────────────────────▶ Failed ─┤
//	  ┌───────────────────────────────────────────────────────────────────────────────────────────────────────┘
//	  └─▶ endWith(why) to every connection; the closing behavior waits ──last ConnectionEnded,
//	      or childrenEndWait──▶ stop   (none open: stop at once)
//
// Why the connections still open end (endReason): engine_shutdown if the close or the drain is the
// engine's shutdown; else what the close at hand says (CloseTunnel.Why: Tunnel.Close out of time
// says tunnel_closed); else the drain's reason; else tunnel_closed. The tunnel stops itself only
// once they have ended, so that the reason reaches them before a stop would (a system message,
// it overtakes endWith in their mailboxes). Stopped from outside (its parent stopped), it records
// nothing: its connections end with their default, tunnel_closed.

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

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
	t.closeListeners() // before the event: whoever hears Draining finds the proxies closed
	t.enter(ctx, messages.StateDraining, reasonOr(m.Reason))
	for _, l := range t.legs {
		if l != t.current && !l.draining {
			t.releaseLeg(ctx, l) // a leg still coming up is not wanted any more
		}
	}
	if len(t.book.conns) == 0 {
		t.finishClose(ctx)
		return
	}
	t.drainEnd = time.Now().Add(d)
	t.drainT = sendAfter(ctx, d, &tunnelDrainExpired{})
}

// draining: the drain timer ends the connections still open; a second close ends the drain now.
func (t *tunnelActor) draining(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *tunnelDrainExpired:
		for _, e := range t.book.conns {
			ctx.Send(e.pid, &EndConnection{Reason: t.drainWhy})
		}
	case *messages.CloseTunnel:
		// A second Close joins the drain under way; a shorter drain shortens it, none (the caller's
		// context ran out, or a forced engine shutdown) ends it now.
		d := t.drainTimeout(m.Drain)
		switch {
		case d == 0:
			t.closeNow(ctx, "drain cut short: "+reasonOr(m.Reason))
		case time.Now().Add(d).Before(t.drainEnd):
			t.drainEnd = time.Now().Add(d)
			rearm(&t.drainT, ctx, d, &tunnelDrainExpired{})
		}
	default:
		t.closing(ctx)
	}
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

// closeNow closes without (more) drain; it is called while handling the close (or the last
// ConnectionEnded of a drain), which endReason reads.
func (t *tunnelActor) closeNow(ctx actor.Context, reason string) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	why := t.endReason(ctx)
	t.enter(ctx, messages.StateClosing, reason)
	t.end(ctx, why, reason)
}

func (t *tunnelActor) fail(ctx actor.Context, err error) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	t.failErr = err
	why := t.endReason(ctx)
	t.enter(ctx, messages.StateFailed, err.Error())
	t.end(ctx, why, "failed: "+err.Error())
}

// endReason is what the connections still open are told when the tunnel ends (see the top).
func (t *tunnelActor) endReason(ctx actor.Context) messages.EndReason {
	m, _ := ctx.Message().(*messages.CloseTunnel)
	switch {
	case t.drainWhy == messages.EndEngineShutdown || m != nil && m.Why == messages.EndEngineShutdown:
		return messages.EndEngineShutdown
	case m != nil && m.Why != "":
		return m.Why
	case t.drainWhy != "":
		return t.drainWhy
	}
	return messages.EndTunnelClosed
}

// end tells every connection why it ends and stops the tunnel once they have ended (closing), or
// at once if none is open. From here on the tunnel starts nothing (over).
func (t *tunnelActor) end(ctx actor.Context, why messages.EndReason, reason string) {
	t.closeListeners()
	stopTimers(t.drainT)
	if len(t.book.conns) == 0 && len(t.legs) == 0 {
		ctx.Stop(ctx.Self())
		return
	}
	pids := make([]*actor.PID, 0, len(t.book.conns))
	for _, e := range t.book.conns {
		pids = append(pids, e.pid)
	}
	t.endT = endChildren(ctx, why, pids) // closing stops the tunnel once they and the legs have ended
	for _, l := range t.legs {
		// Each leg says goodbye with the tunnel's reason and releases its device; a leg already
		// closing (or failed and told) goes on as it was.
		if !l.closing {
			l.closing = true
			ctx.Send(l.pid, &closeLeg{reason: reason, quiet: l.exitForgot})
		}
	}
}

// checkEnded checks, while closing, whether everything the tunnel told to end has ended; it stops the
// tunnel then, or when childrenEndWait has passed (expired).
func (t *tunnelActor) checkEnded(ctx actor.Context, expired bool) {
	if t.endT != nil {
		stopWhenEnded(ctx, t.cfg.Logger, len(t.book.conns)+len(t.legs), expired)
	}
}

func (t *tunnelActor) onStopping(ctx actor.Context) {
	if t.state != messages.StateClosing && t.state != messages.StateFailed {
		// stopped from outside (its parent stopped): its connections end with their default
		t.enter(ctx, messages.StateClosing, "stopped by its parent")
	}
	for _, tm := range []*time.Timer{t.drainT, t.recon.retryT, t.recon.parkT, t.endT} {
		if tm != nil {
			tm.Stop()
		}
	}
	for _, p := range t.recon.parked {
		_ = p.c.Close()
	}
	t.recon.parked = nil
	// Local resources (bounded wait: the accept loops end when their listener closes); the tunnel
	// itself sends no goodbye.
	t.closeListeners()
	for _, l := range t.listeners {
		if l.end != nil {
			<-l.end
		}
	}
	// Each leg says its goodbye as it stops (children stop after this).
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

// over reports whether the tunnel is ending (Closing, Failed) or has ended: it starts nothing and
// acts on none of its legs' reports; what is left is released as it stops.
func (t *tunnelActor) over() bool {
	switch t.state {
	case messages.StateClosing, messages.StateFailed, messages.StateClosed:
		return true
	}
	return false
}
