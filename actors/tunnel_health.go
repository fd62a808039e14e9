package actors

// The tunnel's side of health (keepalive.go judges it): the keepalive child is pointed at the
// current leg, its reports move the tunnel between Up, Degraded and Reconnecting, and the tunnel
// watches the keepalive itself. A keepalive that stops without being asked to (it panicked and its
// supervisor stopped it) would leave the tunnel blind: the tunnel spawns a fresh one at once,
// points it at the current leg, logs at error and emits ChildLost. The tunnel never stops its
// keepalive itself except by stopping (its children stop with it).

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// GetTunnelChildren asks a tunnel for the PIDs of its long-lived children (for diagnostics and
// supervision tests); the reply is *TunnelChildren.
type GetTunnelChildren struct{}

// TunnelChildren answers GetTunnelChildren.
type TunnelChildren struct {
	Keepalive *actor.PID
	Hub       *actor.PID   // the engine's health hub its keepalive registers with (not a child)
	Devices   []*actor.PID // one per leg whose device was reported (a leg's child)
}

func (t *tunnelActor) children() *TunnelChildren {
	c := &TunnelChildren{Keepalive: t.keepalive, Hub: t.cfg.Hub}
	for _, l := range t.legs {
		if l.device != nil {
			c.Devices = append(c.Devices, l.device)
		}
	}
	return c
}

// spawnKeepalive starts the keepalive child (in Started, and in place of a lost one).
func (t *tunnelActor) spawnKeepalive(ctx actor.Context) {
	t.keepalive = ctx.Spawn(props(newKeepaliveActor(t.cfg.Health)))
}

// keepaliveLost: the keepalive stopped while the tunnel was not stopping. A fresh one takes over
// with fresh state; if a leg is current and serving, it is watched again at once.
func (t *tunnelActor) keepaliveLost(ctx actor.Context) {
	t.respawns++
	t.spawnKeepalive(ctx)
	action := "respawned; no leg to watch"
	if l := t.current; l != nil && l.state == legUp && !l.ending() {
		t.monitor(ctx, l)
		action = "respawned; watching " + l.exitID
	}
	t.cfg.Logger.Error("keepalive stopped unexpectedly", "action", action, "respawns", t.respawns)
	emit(ctx, t.cfg.Events, &messages.ChildLost{Parent: "tunnel " + t.cfg.ID, Child: "keepalive", TunnelID: t.cfg.ID,
		Action: action, At: time.Now()})
}

// hubReplaced: the engine lost its health hub and spawned a fresh one; the current leg, if it is
// being watched, is registered with it.
func (t *tunnelActor) hubReplaced(ctx actor.Context, m *healthHubReplaced) {
	t.cfg.Hub = m.hub
	if l := t.current; l != nil && l.state == legUp && !l.ending() {
		t.monitor(ctx, l)
	}
}

// restoreDegraded puts a tunnel that came back Up into Degraded if signaling is still failing.
func (t *tunnelActor) restoreDegraded(ctx actor.Context) {
	if !t.sigOK && t.state == messages.StateUp {
		t.enter(ctx, messages.StateDegraded, "signaling still failing")
	}
}

// monitor points the keepalive actor at the current leg; signaling's health stays as last heard.
func (t *tunnelActor) monitor(ctx actor.Context, l *leg) {
	ctx.Send(t.keepalive, &monitorLeg{hub: t.cfg.Hub, traffic: l.traffic, probe: l.probe, probeBudget: l.probeBudget, exitID: l.exitID, sessionID: l.sessionID,
		exitIdentity: l.exitIdentity, sigOK: t.sigOK})
}

// watchNewLeg points the keepalive at a leg that has just been negotiated: its session request
// and answer went through signaling, which proves signaling works now, so failures heard against
// an earlier exit do not make the new leg Degraded.
func (t *tunnelActor) watchNewLeg(ctx actor.Context, l *leg) {
	t.sigOK = true
	t.monitor(ctx, l)
}

// health handles the keepalive actor's reports.
func (t *tunnelActor) health(ctx actor.Context, msg any) {
	switch m := msg.(type) {
	case *signalingHealth:
		t.sigOK = m.ok
		switch {
		case !m.ok && t.state == messages.StateUp:
			t.cfg.Logger.Warn("signaling failing; data plane healthy, staying up", "cause", m.cause)
			t.enter(ctx, messages.StateDegraded, m.cause)
		case m.ok && t.state == messages.StateDegraded:
			t.enter(ctx, messages.StateUp, m.cause)
		}
	case *dataPlaneFailed:
		if t.current != nil && t.current.sessionID == m.sessionID {
			t.lostCurrent(ctx, "data plane failed: "+m.cause, messages.ReconnectDataPlane)
		}
	case *sessionLost:
		if t.current != nil && t.current.sessionID == m.sessionID {
			t.current.exitForgot = true // the exit has no such session: nothing to say goodbye to
			t.lostCurrent(ctx, "the exit no longer holds the session", messages.ReconnectSessionLost)
		}
	}
}

// lostCurrent: the current leg cannot carry traffic. Up or Degraded reconnect; a switch under way
// decides for itself (currentLost).
func (t *tunnelActor) lostCurrent(ctx actor.Context, cause, class string) {
	switch {
	case t.isUp():
		t.reconnect(ctx, cause, class, false)
	case t.state == messages.StateSwitching:
		t.currentLost(ctx, cause, class, false)
	}
}

func (t *tunnelActor) isUp() bool {
	return t.state == messages.StateUp || t.state == messages.StateDegraded
}

// childTerminated: the keepalive or a leg stopped (connections report ConnectionEnded instead).
func (t *tunnelActor) childTerminated(ctx actor.Context, who *actor.PID) {
	switch l := t.legByPID(who); {
	case t.keepalive != nil && who.Equal(t.keepalive):
		if !t.over() {
			t.keepaliveLost(ctx)
		}
	case l != nil:
		t.legTerminated(ctx, l)
		t.checkEnded(ctx, false) // closing waits for its legs too
	}
}
