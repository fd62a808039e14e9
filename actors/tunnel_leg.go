package actors

// The tunnel's side of its legs (leg.go is the leg actor). The tunnel spawns a leg for each
// session it wants (open, switch, reconfigure, reconnect attempt), keeps a view of each from its
// legChanged reports, and decides what each report means for the tunnel:
//
//	leg report          the leg's purpose / place            the tunnel
//	handshaking         the first leg                        Negotiating → Handshaking
//	up                  first / switch / reconfigure / retry Up (legUp)
//	failed from setup   first / switch / reconfigure / retry Failed / stay Up / Failed / next attempt (legFailed);
//	                                                         the first of a StartTunnel tunnel: Reconnecting
//	failed from up      current, Up or Degraded              Reconnecting (the next exit first after a goodbye)
//	failed from up      current, while switching             the switch decides (currentLost)
//	failed              draining, or no longer wanted        nothing: it is ending
//	exit drains         current, Up or Degraded              the steerer told, or Switching to the next exit (tunnel_drain.go)
//	exit drains         any other                            nothing
//	Terminated          any                                  forgotten; a reconnect or reconfigure that
//	                                                         waited for its release goes on (legReleased)

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

type legPurpose int

const (
	legOpen legPurpose = iota
	legSwitch
	legReconfigure
	legReconnect
)

// leg is the tunnel's view of one of its leg actors, as last reported.
type leg struct {
	legSession
	id         int
	pid        *actor.PID // the leg actor; a child of the tunnel until Terminated
	purpose    legPurpose
	exitID     string
	state      legState              // as last reported
	draining   bool                  // drainLeg sent: no new connection goes to it
	closing    bool                  // closeLeg sent
	exitForgot bool                  // the exit no longer holds the session: no goodbye to say
	drains     *legExitDraining      // its exit drains: heard before the leg was current and Up, acted on once it is
	conns      map[string]*actor.PID // connection children relaying over this leg
}

// ending reports whether the leg is on its way out (only Terminated follows).
func (l *leg) ending() bool { return l.closing || l.state.final() }

// startLeg spawns a leg that asks exitID for a session.
func (t *tunnelActor) startLeg(ctx actor.Context, exitID string, purpose legPurpose) *leg {
	if IsWireGuardExit(exitID) {
		// A WireGuard server knows one endpoint per key: a leg still draining on this exit would
		// lose its replies to the new one at its first handshake. It ends now.
		for _, o := range t.legs {
			if o.exitID == exitID && o != t.current {
				t.releaseLeg(ctx, o)
			}
		}
	}
	t.nextLeg++
	l := &leg{id: t.nextLeg, purpose: purpose, exitID: exitID, conns: map[string]*actor.PID{}}
	setup := t.cfg.HandshakeTimeout
	if purpose == legOpen && !t.cfg.OpenDeadline.IsZero() {
		setup = min(setup, max(time.Until(t.cfg.OpenDeadline), minWait)) // OpenTunnel's context
	}
	l.pid = ctx.Spawn(newLegProps(legConfig{
		id: l.id, tunnelID: t.cfg.ID, exitID: exitID, setup: setup, handshake: t.cfg.HandshakeTimeout, udpBind: t.cfg.UDPBind, keepalive: t.cfg.Keepalive,
		identity: t.cfg.Identity, trust: t.cfg.Trust, certificate: t.cfg.Certificate, signaling: t.cfg.Signaling,
		logger: t.cfg.Logger, wg: t.wireGuard(exitID), probeTimeout: t.cfg.Health.ProbeTimeout,
	}))
	t.legs[l.id] = l
	return l
}

// checkExit: exitID names a Warren exit validly, or a WireGuard exit the tunnel knows.
func (t *tunnelActor) checkExit(exitID string) error {
	if IsWireGuardExit(exitID) {
		if t.cfg.WireGuard[exitID] == nil {
			return fmt.Errorf("%w: %s", ErrUnknownExit, exitID)
		}
		return nil
	}
	return signaling.ValidID(exitID)
}

// wireGuard is exitID's WireGuard configuration: nil for a Warren exit, and for a WireGuard id the
// tunnel does not know, whose leg fails at once (ErrUnknownExit).
func (t *tunnelActor) wireGuard(exitID string) *WireGuardExit {
	if !IsWireGuardExit(exitID) {
		return nil
	}
	return t.cfg.WireGuard[exitID]
}

func (t *tunnelActor) legByPID(pid *actor.PID) *leg {
	for _, l := range t.legs {
		if l.pid.Equal(pid) {
			return l
		}
	}
	return nil
}

// legChanged handles a leg's report of a transition.
func (t *tunnelActor) legChanged(ctx actor.Context, m *legChanged) {
	l := t.legs[m.id]
	if l == nil || t.over() {
		return
	}
	l.state, l.legSession = m.to, m.session
	switch m.to {
	case legHandshaking:
		if l.purpose == legOpen && l == t.current {
			t.enter(ctx, messages.StateHandshaking, m.cause)
		}
	case legUp:
		if l.closing {
			return // no longer wanted; it is being closed
		}
		t.legUp(ctx, l, m.rtt)
	case legFailed:
		t.stopConns(ctx, l)
		if m.from == legNegotiating || m.from == legHandshaking {
			t.legFailed(ctx, l, m.err)
		} else {
			t.legLost(ctx, l, m.err)
		}
		t.releaseLeg(ctx, l) // a failed leg waits for closeLeg, so its Terminated never overtakes this report
	}
}

// legTerminated: the leg and its device have released everything. A leg stops only when told
// (closeLeg), so one that was not told panicked: it is lost like a failed one.
func (t *tunnelActor) legTerminated(ctx actor.Context, l *leg) {
	if !l.closing && !t.over() {
		l.closing = true
		t.stopConns(ctx, l)
		err := fmt.Errorf("%w: leg stopped unexpectedly", ErrDeviceFailed)
		if l.state == legNegotiating || l.state == legHandshaking {
			t.legFailed(ctx, l, err)
		} else {
			t.legLost(ctx, l, err)
		}
	}
	delete(t.legs, l.id)
	if !t.over() {
		t.legReleased(ctx, l)
	}
}

// legLost handles an up leg lost under the tunnel (exit goodbye, device stopped).
func (t *tunnelActor) legLost(ctx actor.Context, l *leg, err error) {
	switch {
	case l != t.current:
	case t.isUp():
		t.reconnect(ctx, err.Error(), lostClass(err), errors.Is(err, ErrExitGone))
	case t.state == messages.StateSwitching:
		t.currentLost(ctx, err.Error(), lostClass(err), errors.Is(err, ErrExitGone)) // the switch decides what comes next
	}
}

// lostClass classes the loss of an up leg (messages.ReconnectCauses).
func lostClass(err error) string {
	switch {
	case errors.Is(err, ErrExitGone):
		return messages.ReconnectExitGoodbye
	case errors.Is(err, ErrDeviceFailed):
		return messages.ReconnectDeviceLost
	}
	return messages.ReconnectOther
}

// drainLeg lets the leg's connections finish for d, then ends them with drain_timeout; the leg is
// released when its last connection has ended.
func (t *tunnelActor) drainLeg(ctx actor.Context, l *leg, d time.Duration) {
	l.draining = true
	if len(l.conns) == 0 {
		t.releaseLeg(ctx, l)
		return
	}
	ctx.Send(l.pid, &drainLeg{d: d})
}

// legDrainExpired ends what is left on a drained leg; the leg is released when the last has ended.
func (t *tunnelActor) legDrainExpired(ctx actor.Context, m *legDrainExpired) {
	if l := t.legs[m.leg]; l != nil && l.draining {
		for _, pid := range l.conns {
			ctx.Send(pid, &EndConnection{Reason: messages.EndDrainTimeout})
		}
	}
}

// releaseLeg closes the leg (goodbye; its device releases netstack → device → bind); the leg is
// forgotten on its Terminated.
func (t *tunnelActor) releaseLeg(ctx actor.Context, l *leg) {
	if l.closing {
		return
	}
	l.closing = true
	t.stopConns(ctx, l)
	ctx.Send(l.pid, &closeLeg{reason: "released", quiet: l.exitForgot})
}

// stopConns ends the connections still relaying over a leg that is going away (a drained leg has
// none left), with tunnel_closed: their data plane is gone.
func (t *tunnelActor) stopConns(ctx actor.Context, l *leg) {
	for _, pid := range l.conns {
		ctx.Send(pid, &endWith{why: messages.EndTunnelClosed})
	}
}

// alive reports whether the leg actor has not terminated yet (its release is still to come).
func (t *tunnelActor) alive(l *leg) bool { return l != nil && t.legs[l.id] == l }

// localAddrTowards is the local address the host routes towards ep (no packet is sent).
func localAddrTowards(ep netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ep))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to exit endpoint %s: %w", ep, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// legUp is called when a leg's data plane is proven.
func (t *tunnelActor) legUp(ctx actor.Context, l *leg, rtt time.Duration) {
	switch {
	case l.purpose == legOpen && l == t.current:
		t.info.UpSince = time.Now()
		t.enter(ctx, messages.StateUp, fmt.Sprintf("handshake completed with %s, probe rtt %v", l.exitID, rtt.Round(rttPrecision)))
		t.startAccepting(ctx)
		t.watchNewLeg(ctx, l)
		t.reply(ctx, nil)
	case l == t.pending && l.purpose == legSwitch:
		old := t.current
		t.current, t.pending, t.move = l, nil, nil
		t.info.ExitID = l.exitID
		t.enter(ctx, messages.StateUp, fmt.Sprintf("switched to %s (probe rtt %v)", l.exitID, rtt.Round(rttPrecision)))
		t.watchNewLeg(ctx, l)
		t.answerWaiter(ctx, nil)
		if old != nil && old.state == legUp && !old.ending() {
			t.drainLeg(ctx, old, t.drainFor)
		}
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconfigure:
		t.current, t.pending = l, nil
		t.enter(ctx, messages.StateUp, fmt.Sprintf("reconfigured with %s (probe rtt %v)", l.exitID, rtt.Round(rttPrecision)))
		t.watchNewLeg(ctx, l)
		t.answerWaiter(ctx, nil)
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconnect:
		t.reconnected(ctx, l, rtt)
	default:
		t.releaseLeg(ctx, l) // no longer wanted
		return
	}
	if m := l.drains; m != nil && l == t.current && t.isUp() { // its exit began to drain as it came up
		l.drains = nil
		t.exitDrains(ctx, m)
	}
}

// legFailed is called when a leg could not come up (it is ending by itself).
func (t *tunnelActor) legFailed(ctx actor.Context, l *leg, err error) {
	switch {
	case l.purpose == legOpen && l == t.current && t.cfg.KeepTrying:
		t.retryStart(ctx, err)
	case l.purpose == legOpen && l == t.current:
		t.fail(ctx, err)
	case l == t.pending && l.purpose == legSwitch:
		t.pending = nil
		if t.nextMove(ctx, err) { // moving off a draining exit: the next one
			return
		}
		t.answerWaiter(ctx, err)
		if t.current == nil || t.current.state != legUp || t.current.ending() { // the old leg was lost meanwhile
			t.reconnect(ctx, "switch failed ("+err.Error()+") and the old exit was lost", "", false)
			return
		}
		t.enter(ctx, messages.StateUp, "switch failed, staying on "+t.current.exitID+": "+err.Error())
		t.monitor(ctx, t.current) // the keepalive may have gone quiet on it during the switch
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconfigure:
		t.pending = nil
		t.answerWaiter(ctx, err)
		if t.cfg.KeepTrying { // a tunnel that keeps trying does not give up on a failed renewal
			t.retryReconfigure(ctx, err)
			return
		}
		t.fail(ctx, err)
	case l == t.pending && l.purpose == legReconnect:
		t.reconnectFailed(ctx, err)
	}
}

// legReleased is called when a leg has terminated: its device, netstack and bind are gone.
func (t *tunnelActor) legReleased(ctx actor.Context, l *leg) {
	if t.state == messages.StateReconnecting && l == t.released && !t.over() {
		t.released = nil
		t.nextAttempt(ctx) // the old device, netstack and bind are gone: now the first attempt
		return
	}
	if l == t.released {
		t.released = nil
		if t.state == messages.StateReconfiguring && t.pending == nil && t.current == nil && !t.over() {
			// The old device, netstack and bind are gone: only now create the new ones.
			t.pending = t.startLeg(ctx, t.info.ExitID, legReconfigure)
		}
	}
}
