package actors

// A tunnel whose exit drains (the exit's signed session.draining, verified by signaling and passed
// on by the leg): the exit admits no new session and ends the session's flows within its drain
// timeout, so the tunnel moves to another exit make-before-break while its connections finish there.
//
//	Up / Degraded on the draining session ──(Steer set)──▶ TunnelExitDraining to the steerer; nothing else
//	Up / Degraded on the draining session ──(no steerer)──▶ Switching to the next exit of [ExitID]+Exits
//	    after the draining one ──new leg up──▶ Up there (the old leg drains for DrainTimeout, as a Switch's)
//	                           ──new leg failed──▶ the next exit, and so on ──none left──▶ Up, staying on the
//	                             draining exit until it goes (its goodbye: Reconnecting, as today)
//
// A notice for a session that is not the current one, or while the tunnel is not Up or Degraded,
// changes nothing — except for a leg still coming up (its exit began to drain as it granted the
// session): the notice is acted on if that leg becomes the current one. An exit that refuses a session because it drains (ErrExitDraining) is final for
// that exit: a reconnect tries the next one at once instead of backing off (tunnel_reconnect.go).

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// exitDrains handles a leg's report that its exit drains.
func (t *tunnelActor) exitDrains(ctx actor.Context, m *legExitDraining) {
	l := t.legs[m.id]
	if l == nil || l.ending() || t.over() {
		return
	}
	if l.state == legNegotiating || l.state == legHandshaking {
		l.drains = m // a leg coming up: acted on if it becomes the current one (legUp)
		return
	}
	if l != t.current || l.sessionID != m.sessionID || !t.isUp() {
		t.cfg.Logger.Debug("exit drain notice for a session not in use; nothing to do", "leg", m.id, "session", m.sessionID, "state", t.state)
		return
	}
	t.cfg.Logger.Info("exit drains", "exit", l.exitID, "session", l.sessionID, "drain", m.drain)
	if t.cfg.Steer != nil {
		ctx.Send(t.cfg.Steer, &messages.TunnelExitDraining{TunnelID: t.cfg.ID, ExitID: l.exitID, SessionID: l.sessionID,
			Drain: m.drain, At: time.Now()})
		return
	}
	order := t.drainTargets(l.exitID)
	if len(order) == 0 {
		t.cfg.Logger.Warn("exit drains and no other exit is configured; staying on it until it goes", "exit", l.exitID)
		return
	}
	t.waiter, t.waitReconf, t.drainFor = nil, false, t.cfg.DrainTimeout
	t.move = order[1:]
	t.enter(ctx, messages.StateSwitching, fmt.Sprintf("exit %s drains: switch to %s", l.exitID, order[0]))
	t.pending = t.startLeg(ctx, order[0], legSwitch)
}

// drainTargets are the exits a tunnel tries, in turn, when exit from drains: the failover list
// rotated to start after it, without it.
func (t *tunnelActor) drainTargets(from string) []string {
	return slices.DeleteFunc(t.failoverOrder(lostExit{exitID: from, next: true}), func(id string) bool { return id == from })
}

// nextMove: a switch away from a draining exit failed; it tries the next exit while the old leg
// still serves, and reports whether it did.
func (t *tunnelActor) nextMove(ctx actor.Context, err error) bool {
	old := t.current
	if len(t.move) == 0 || old == nil || old.state != legUp || old.ending() {
		t.move = nil
		return false
	}
	next := t.move[0]
	t.move = t.move[1:]
	t.cfg.Logger.Warn("switch away from a draining exit failed; trying the next", "from", old.exitID, "next", next, "err", err)
	t.pending = t.startLeg(ctx, next, legSwitch)
	return true
}
