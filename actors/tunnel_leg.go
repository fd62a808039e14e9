package actors

// A leg is one session of a tunnel with one exit and the device that carries it. A tunnel has one
// leg while Up, two while switching (the old one serving, the new one coming up) or while the old
// one drains after a switch.
//
//	negotiating ──session granted──▶ handshaking ──HandshakeCompleted──▶ up ──drain──▶ draining
//	     └──────refused / timeout / device or probe failed──▶ failed      └──────────────┴──▶ released
//
// Releasing a leg says goodbye to its exit and stops its device (netstack → device → UDP bind); the
// leg is forgotten when the device has terminated.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
)

type legState int

const (
	legNegotiating legState = iota
	legHandshaking
	legUp
	legDraining
	legReleasing
)

type legPurpose int

const (
	legOpen legPurpose = iota
	legSwitch
	legReconfigure
	legReconnect
)

type leg struct {
	id        int
	purpose   legPurpose
	exitID    string
	state     legState
	sessionID string
	wgKey     signaling.Key
	session   *messages.SessionResponse
	device    *actor.PID
	dialer    netstack.Dialer // valid once the device is ready; its stack is alive while device is
	endpoint  netip.AddrPort
	addrs     []netip.Addr
	deadline  time.Time
	timer     *time.Timer           // setup deadline, then drain deadline; stopped on release and in Stopping
	saidBye   bool                  // the exit knows the session is over (we said goodbye, or it did)
	unwatched bool                  // signaling no longer routes the exit's goodbye for it
	conns     map[string]*actor.PID // connection children relaying over this leg
}

type legTimedOut struct{ leg int }
type legDrainExpired struct{ leg int }

// startLeg asks exitID for a session; the leg goes on as its replies arrive.
func (t *tunnelActor) startLeg(ctx actor.Context, exitID string, purpose legPurpose) *leg {
	t.nextLeg++
	l := &leg{id: t.nextLeg, purpose: purpose, exitID: exitID, conns: map[string]*actor.PID{}}
	t.legs[l.id] = l
	var id [16]byte
	_, _ = rand.Read(id[:])
	l.sessionID = hex.EncodeToString(id[:])
	key, err := signaling.NewPrivateKey()
	if err != nil {
		t.legFailed(ctx, l, err)
		return l
	}
	l.wgKey = key
	limit := t.cfg.HandshakeTimeout
	if purpose == legOpen && !t.cfg.OpenDeadline.IsZero() {
		limit = min(limit, max(time.Until(t.cfg.OpenDeadline), time.Millisecond)) // OpenTunnel's context
	}
	l.deadline = time.Now().Add(limit)
	l.timer = t.sendAfter(ctx, limit, &legTimedOut{leg: l.id})
	req := &messages.SessionRequest{SessionID: l.sessionID, ExitID: exitID, WGPublicKey: key.Public().String(), Certificate: t.cfg.Certificate}
	t.cfg.Identity.SignSessionRequest(req, time.Now())
	ctx.Request(t.cfg.Signaling, &requestSession{exitID: exitID, req: req, trust: t.cfg.Trust, timeout: limit, tag: l.id})
	return l
}

// sendAfter arms a timer owned by the tunnel that sends msg to it.
func (t *tunnelActor) sendAfter(ctx actor.Context, d time.Duration, msg any) *time.Timer {
	system, self := ctx.ActorSystem(), ctx.Self()
	return time.AfterFunc(d, func() { system.Root.Send(self, msg) })
}

func (t *tunnelActor) legByDevice(pid *actor.PID) *leg {
	for _, l := range t.legs {
		if l.device != nil && l.device.Equal(pid) {
			return l
		}
	}
	return nil
}

func (t *tunnelActor) legBySession(id string) *leg {
	for _, l := range t.legs {
		if l.sessionID == id {
			return l
		}
	}
	return nil
}

// legEvent handles what the legs' helpers report: signaling replies, device and probe results,
// timers, the exit's goodbye, and the devices' termination.
func (t *tunnelActor) legEvent(ctx actor.Context, msg any) {
	if t.stopping {
		// A stopping tunnel starts nothing (its children were stopped once, already) and reacts to
		// nothing: its devices terminating is the release it asked for.
		if m, ok := msg.(*actor.Terminated); ok {
			if l := t.legByDevice(m.Who); l != nil {
				delete(t.legs, l.id)
			}
		}
		return
	}
	switch m := msg.(type) {
	case *sessionReply:
		l := t.legs[m.tag]
		if l == nil || l.state != legNegotiating {
			return // released meanwhile; its goodbye went out when it was
		}
		if m.err != nil {
			t.legFailed(ctx, l, m.err)
			return
		}
		l.session = m.resp
		if err := t.startDevice(ctx, l); err != nil {
			t.legFailed(ctx, l, err)
			return
		}
		l.state = legHandshaking
		ctx.Send(t.cfg.Signaling, &watchSession{sessionID: l.sessionID, exitIdentity: l.session.ExitIdentity, tunnel: ctx.Self()})
		if l.purpose == legOpen {
			t.transition(ctx, messages.StateHandshaking, "session granted by "+l.exitID)
		}
	case *deviceReady:
		l := t.legByDevice(ctx.Sender())
		if l == nil || l.state != legHandshaking {
			return
		}
		exitAddr, _ := netip.ParseAddr(l.session.ExitAddresses[0])
		l.dialer = netstack.Dialer{Stack: m.stack, Service: netip.AddrPortFrom(exitAddr, l.session.ConnectPort)}
		exitKey, _ := signaling.ParseKey(l.session.ExitWGPublicKey)
		f := ctx.RequestFuture(l.device, &addPeer{
			publicKey:  exitKey,
			allowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			endpoint:   l.endpoint, keepalive: t.cfg.Keepalive, sessionID: l.sessionID,
			probe: &l.dialer, notify: ctx.Self(), probeLimit: time.Until(l.deadline),
		}, max(time.Until(l.deadline), time.Millisecond))
		reenter(ctx, f, func(res any, err error) {
			if r, ok := res.(*addPeerResponse); ok && r.err != nil {
				err = r.err
			}
			if err != nil && l.state == legHandshaking {
				t.legFailed(ctx, l, fmt.Errorf("%w: %w", ErrDeviceFailed, err))
			}
		})
	case *deviceFailed:
		if l := t.legByDevice(ctx.Sender()); l != nil {
			t.legFailed(ctx, l, fmt.Errorf("%w: %w", ErrDeviceFailed, m.err))
		}
	case *probeFailed:
		if l := t.legBySession(m.sessionID); l != nil && l.state == legHandshaking {
			t.legFailed(ctx, l, fmt.Errorf("%w: first handshake and probe: %w", ErrHandshakeTimeout, m.err))
		}
	case *messages.HandshakeCompleted:
		l := t.legBySession(m.SessionID)
		if l == nil || l.state != legHandshaking {
			return
		}
		l.state = legUp
		l.timer.Stop()
		t.legUp(ctx, l, m.RTT)
	case *legTimedOut:
		if l := t.legs[m.leg]; l != nil && (l.state == legNegotiating || l.state == legHandshaking) {
			t.legFailed(ctx, l, fmt.Errorf("%w: %s did not come up in time", ErrHandshakeTimeout, l.exitID))
		}
	case *legDrainExpired:
		if l := t.legs[m.leg]; l != nil && l.state == legDraining {
			for _, pid := range l.conns {
				ctx.Send(pid, &EndConnection{Reason: messages.EndDrainTimeout})
			}
		}
	case *exitSaidGoodbye:
		if l := t.legBySession(m.sessionID); l != nil {
			l.saidBye = true // the exit already knows
			t.legGone(ctx, l, fmt.Errorf("%w: %s", ErrExitGone, m.reason))
		}
	case *actor.Terminated:
		if l := t.legByDevice(m.Who); l != nil {
			if l.state == legReleasing {
				delete(t.legs, l.id)
				t.legReleased(ctx, l)
				return
			}
			// The device stopped by itself (it failed, or panicked): it is released already, so
			// the leg has no device left to stop. (A watched child reports Terminated twice; the
			// second finds no leg.)
			l.device = nil
			t.legGone(ctx, l, fmt.Errorf("%w: device stopped", ErrDeviceFailed))
		}
	}
}

// legGone handles a leg lost under the tunnel (exit goodbye, device stopped).
func (t *tunnelActor) legGone(ctx actor.Context, l *leg, err error) {
	switch l.state {
	case legNegotiating, legHandshaking:
		t.legFailed(ctx, l, err)
	case legUp:
		switch {
		case l == t.current && t.isUp():
			t.reconnect(ctx, err.Error(), errors.Is(err, ErrExitGone))
			return
		case l == t.current && t.state == messages.StateSwitching:
			t.currentLost(ctx, err.Error()) // the switch decides what comes next
			return
		}
		t.releaseLeg(ctx, l)
	case legDraining:
		t.releaseLeg(ctx, l)
	}
}

// drainLeg lets the leg's connections finish for d, then ends them with drain_timeout; the leg is
// released when its last connection has ended.
func (t *tunnelActor) drainLeg(ctx actor.Context, l *leg, d time.Duration) {
	l.state = legDraining
	if len(l.conns) == 0 {
		t.releaseLeg(ctx, l)
		return
	}
	l.timer = t.sendAfter(ctx, d, &legDrainExpired{leg: l.id})
}

// releaseLeg says goodbye and stops the leg's device; the leg is forgotten on its Terminated.
func (t *tunnelActor) releaseLeg(ctx actor.Context, l *leg) {
	if l.state == legReleasing {
		return
	}
	l.state = legReleasing
	if l.timer != nil {
		l.timer.Stop()
	}
	t.legGoodbye(ctx, l, "released")
	for _, pid := range l.conns {
		ctx.Stop(pid) // only on a leg lost under them; a drained leg has none left
	}
	if l.device == nil {
		delete(t.legs, l.id)
		t.legReleased(ctx, l)
		return
	}
	ctx.Stop(l.device)
}

// legGoodbye tells the leg's exit the session is over, so it releases the peer now rather than on
// a timeout. It goes out as soon as a session was requested: a grant still in flight is released too.
func (t *tunnelActor) legGoodbye(ctx actor.Context, l *leg, reason string) {
	if l.sessionID == "" {
		return
	}
	if !l.unwatched {
		l.unwatched = true
		ctx.Send(t.cfg.Signaling, &unwatchSession{sessionID: l.sessionID})
	}
	if l.saidBye {
		return
	}
	l.saidBye = true
	c := &messages.SessionClose{SessionID: l.sessionID, Reason: truncateUTF8(reason, 200)}
	t.cfg.Identity.SignSessionClose(c, time.Now())
	ctx.Send(t.cfg.Signaling, &sendGoodbye{exitID: l.exitID, close: c})
}

func (t *tunnelActor) startDevice(ctx actor.Context, l *leg) error {
	endpoint, err := netip.ParseAddrPort(l.session.Endpoint)
	if err != nil {
		return fmt.Errorf("%w: endpoint: %w", ErrSessionRefused, err)
	}
	l.endpoint = endpoint
	for _, a := range l.session.ClientAddresses {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("%w: client address: %w", ErrSessionRefused, err)
		}
		l.addrs = append(l.addrs, addr)
	}
	bindAddr := t.cfg.UDPBind
	if !bindAddr.IsValid() {
		if bindAddr, err = localAddrTowards(endpoint); err != nil {
			return fmt.Errorf("%w: %w", ErrDeviceFailed, err)
		}
	}
	l.device = ctx.Spawn(props(newDeviceActor(deviceConfig{
		role: roleClient, owner: t.cfg.ID, privateKey: l.wgKey, listen: netip.AddrPortFrom(bindAddr, 0),
		addresses: l.addrs, mtu: l.session.MTU, logger: t.cfg.Logger,
	})))
	ctx.Watch(l.device)
	return nil
}

// localAddrTowards is the local address the host routes towards ep (no packet is sent).
func localAddrTowards(ep netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ep))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to exit endpoint %s: %w", ep, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
