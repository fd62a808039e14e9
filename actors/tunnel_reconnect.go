package actors

// Health and reconnection of a tunnel (see keepalive.go for how health is judged).
//
//	Up ──signaling failing──▶ Degraded ──signaling answers──▶ Up       (traffic flows throughout)
//	Up / Degraded ──data plane failed, session lost, exit goodbye, device lost──▶ Reconnecting
//	Negotiating / Handshaking of a StartTunnel tunnel ──its first session failed──▶ Reconnecting
//	Reconnecting: release the leg (goodbye; netstack → device → bind), then try exits in turn —
//	the same exit first after a data-plane failure, the next one after a goodbye — with exponential
//	backoff and jitter between attempts, until one comes up ──▶ Up. Proxy connections that arrive
//	meanwhile wait (up to ReconnectWait) and then go to the new leg, or get a clear failure.

import (
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/proxy"
)

// Backoff bounds the wait between reconnection attempts: Min doubles per failed attempt up to Max,
// with ±20% jitter.
type Backoff struct{ Min, Max time.Duration }

// parkedConn is a proxy connection accepted while reconnecting, owned by the tunnel until it goes
// to a connection actor (or is refused) — closed in Stopping otherwise.
type parkedConn struct {
	c        net.Conn
	kind     proxy.Kind
	deadline time.Time
}

// exits is the tunnel's failover list: the configured exit first, then the others.
func (t *tunnelActor) exits() []string { return append([]string{t.cfg.ExitID}, t.cfg.Exits...) }

// reconnection is the state of a tunnel's reconnect (Reconnecting), and of the switch that may lead
// to one (lost).
type reconnection struct {
	attempt int          // reconnection attempts that failed so far
	skipped int          // exits in a row that refused because they drain (tried next at once)
	order   []string     // the exits a reconnect tries, in turn (failoverOrder)
	lost    lostExit     // the exit lost during a switch, for a reconnect after it
	class   string       // why the reconnect began: one of messages.ReconnectCauses
	retryT  *time.Timer  // next reconnection attempt (reconnectAttempt)
	parkT   *time.Timer  // next parked-connection deadline (parkExpired)
	parked  []parkedConn // proxy connections waiting for a reconnect; owned until handed on
}

// lostExit is the exit a tunnel lost, and whether it said goodbye (next: try the one after it first).
type lostExit struct {
	exitID string
	next   bool
	class  string // how it was lost (messages.ReconnectCauses)
}

// failoverOrder is the order of a reconnect's attempts: the failover list rotated to start at the
// lost exit (after it, if it said goodbye). A lost exit outside the list (switched to) goes first.
func (t *tunnelActor) failoverOrder(lost lostExit) []string {
	exits := t.exits()
	if lost.exitID == "" {
		return exits
	}
	i := slices.Index(exits, lost.exitID)
	if i < 0 {
		exits, i = append([]string{lost.exitID}, exits...), 0
	}
	if lost.next {
		i = (i + 1) % len(exits)
	}
	return slices.Concat(exits[i:], exits[:i])
}

// reconnect leaves Up (or Degraded) for Reconnecting. next selects the exit after the lost one
// first (it said goodbye); otherwise the same exit is tried first. The lost exit is the current
// leg's, or, after a switch that failed once the old exit was lost, the one currentLost recorded
// (and then its class is how that one was lost). class is one of messages.ReconnectCauses.
func (t *tunnelActor) reconnect(ctx actor.Context, cause, class string, next bool) {
	old := t.current
	lost := t.recon.lost
	if old != nil {
		lost = lostExit{exitID: old.exitID, next: next, class: class}
	}
	t.recon.class = lost.class
	if t.recon.class == "" {
		t.recon.class = messages.ReconnectOther
	}
	t.enter(ctx, messages.StateReconnecting, cause)
	ctx.Send(t.keepalive, &stopMonitoring{})
	t.recon.attempt, t.recon.skipped, t.recon.order, t.recon.lost = 0, 0, t.failoverOrder(lost), lostExit{}
	t.current = nil
	if t.alive(old) {
		t.released = old
		t.releaseLeg(ctx, old) // the first attempt starts once it has terminated (legReleased)
		return
	}
	if t.released != nil {
		return // a leg lost during a switch is still being released: legReleased starts the first attempt
	}
	t.nextAttempt(ctx)
}

// retryStart: the first session of a tunnel started with StartTunnel (KeepTrying) failed. Rather
// than Failed, the tunnel goes to Reconnecting (class "start") and tries its failover list from
// the exit after the one that failed (the same one again if it has no other) with its backoff,
// as after a failed reconnection attempt, until one comes up or it is closed.
func (t *tunnelActor) retryStart(ctx actor.Context, err error) {
	t.current = nil
	t.recon.class = messages.ReconnectStart
	t.enter(ctx, messages.StateReconnecting, "first session failed: "+err.Error())
	t.recon.attempt, t.recon.skipped, t.recon.order, t.recon.lost = 0, 0, t.exits(), lostExit{}
	t.reconnectFailed(ctx, err) // the failed leg counts as the first attempt
}

// retryReconfigure: a Reconfigure of a tunnel started with StartTunnel (KeepTrying) failed to
// bring up its new session (its old one is released already). Rather than Failed, the tunnel goes
// to Reconnecting (class "other") and tries its failover list from the same exit, with its
// backoff, as after a failed reconnection attempt.
func (t *tunnelActor) retryReconfigure(ctx actor.Context, err error) {
	t.current = nil
	t.recon.class = messages.ReconnectOther
	t.enter(ctx, messages.StateReconnecting, "reconfigure failed: "+err.Error())
	t.recon.attempt, t.recon.skipped, t.recon.order, t.recon.lost = 0, 0, t.failoverOrder(lostExit{exitID: t.info.ExitID}), lostExit{}
	t.reconnectFailed(ctx, err) // the failed leg counts as the first attempt
}

func (t *tunnelActor) reconnecting(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *reconnectAttempt:
		if t.pending == nil && t.current == nil {
			t.nextAttempt(ctx)
		}
	case *parkExpired:
		t.refuseExpired(ctx)
	case *messages.CloseTunnel:
		if t.recon.retryT != nil {
			t.recon.retryT.Stop()
		}
		if t.pending != nil {
			t.releaseLeg(ctx, t.pending)
			t.pending = nil
		}
		t.closeNow(ctx, reasonOr(m.Reason))
	case *messages.SwitchTunnel:
		ctx.Respond(&messages.SwitchTunnelResponse{Err: ErrBusy})
	case *messages.ReconfigureTunnel:
		ctx.Respond(&messages.ReconfigureTunnelResponse{Err: ErrBusy})
	}
}

func (t *tunnelActor) nextAttempt(ctx actor.Context) {
	exit := t.recon.order[t.recon.attempt%len(t.recon.order)]
	t.cfg.Logger.Info("reconnect attempt", "attempt", t.recon.attempt+1, "exit", exit)
	t.pending = t.startLeg(ctx, exit, legReconnect)
}

// reconnectFailed schedules the next attempt after the backoff; after an exit that drains, the
// next exit is tried at once (unless every exit of the order refused so in a row).
func (t *tunnelActor) reconnectFailed(ctx actor.Context, err error) {
	t.pending = nil
	t.recon.attempt++
	if errors.Is(err, ErrExitDraining) && t.recon.skipped+1 < len(t.recon.order) {
		t.recon.skipped++
		t.cfg.Logger.Info("reconnect attempt refused: the exit drains; trying the next at once", "attempt", t.recon.attempt)
		t.nextAttempt(ctx)
		return
	}
	t.recon.skipped = 0
	wait := t.cfg.Backoff.Min << min(t.recon.attempt-1, 20)
	if wait > t.cfg.Backoff.Max || wait <= 0 {
		wait = t.cfg.Backoff.Max
	}
	wait = time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
	t.cfg.Logger.Warn("reconnect attempt failed", "attempt", t.recon.attempt, "retry_in", wait.Round(logPrecision), "err", err)
	t.recon.retryT = sendAfter(ctx, wait, &reconnectAttempt{})
}

// reconnected makes the new leg current and hands it the connections that waited.
func (t *tunnelActor) reconnected(ctx actor.Context, l *leg, rtt time.Duration) {
	t.current, t.pending = l, nil
	t.info.ExitID = l.exitID
	if t.info.UpSince.IsZero() { // a StartTunnel tunnel's first time Up: not a reconnection
		t.info.UpSince = time.Now()
	} else {
		t.info.Reconnects++
	}
	if t.recon.parkT != nil {
		t.recon.parkT.Stop()
	}
	t.enter(ctx, messages.StateUp, "reconnected to "+l.exitID+" after "+itoa(uint16(min(t.recon.attempt+1, 65535)))+" attempt(s), probe rtt "+rtt.Round(rttPrecision).String())
	t.watchNewLeg(ctx, l)
	parked := t.recon.parked
	t.recon.parked = nil
	for _, p := range parked {
		t.accept(ctx, &connAccepted{c: p.c, kind: p.kind, parked: true})
	}
	t.restoreDegraded(ctx)
}

// currentLost handles the current leg failing while a switch is under way: it is released, and the
// switch's outcome decides (its success makes the new leg current; its failure reconnects).
func (t *tunnelActor) currentLost(ctx actor.Context, cause, class string, next bool) {
	old := t.current
	t.current = nil
	if old != nil {
		t.recon.lost = lostExit{exitID: old.exitID, next: next, class: class} // where a reconnect after the switch starts
	}
	ctx.Send(t.keepalive, &stopMonitoring{})
	t.cfg.Logger.Warn("current exit lost during a switch", "cause", cause)
	if t.alive(old) {
		t.released = old // a reconnect after a failed switch waits for its release
		t.releaseLeg(ctx, old)
	}
}

// park holds a proxy connection accepted while reconnecting.
func (t *tunnelActor) park(ctx actor.Context, m *connAccepted) {
	if len(t.recon.parked) >= max(t.cfg.MaxConns, 64) { // bounded like refusals: beyond it, refuse now
		t.refuse(ctx, m.c, m.kind, errNotReady{})
		return
	}
	t.recon.parked = append(t.recon.parked, parkedConn{c: m.c, kind: m.kind, deadline: time.Now().Add(t.cfg.ReconnectWait)})
	if len(t.recon.parked) == 1 {
		t.recon.parkT = sendAfter(ctx, t.cfg.ReconnectWait, &parkExpired{})
	}
}

// refuseExpired answers connections that waited ReconnectWait with a clear failure.
func (t *tunnelActor) refuseExpired(ctx actor.Context) {
	now := time.Now()
	keep := t.recon.parked[:0]
	for _, p := range t.recon.parked {
		if now.Before(p.deadline) {
			keep = append(keep, p)
			continue
		}
		t.refuse(ctx, p.c, p.kind, errNotReady{})
	}
	t.recon.parked = keep
	if len(keep) > 0 {
		t.recon.parkT = sendAfter(ctx, time.Until(keep[0].deadline), &parkExpired{})
	}
}
