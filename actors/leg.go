package actors

// The leg actor owns one session of a tunnel with one exit: the session request and its goodbye,
// the device that carries the session (its child: netstack, WireGuard device, UDP bind), the first
// handshake's probe (run by the device's peer), and the leg's setup and drain timers. A tunnel has
// one leg while Up, two while a switch brings up a new one beside the serving one, and more while
// old ones drain. The tunnel hears of every transition of its legs (legChanged) and decides what
// follows; a leg never decides for its tunnel.
//
//	negotiating ──session granted──▶ handshaking ──probe round trip (HandshakeCompleted)──▶ up ──drainLeg──▶ draining
//	     │                                │                                                 │                  │
//	     └─refused / setup deadline / ────┴──▶ failed ◀── exit goodbye / device lost ───────┴──────────────────┘
//	       grant unusable / device or probe failed / exit goodbye (handshaking)
//	closeLeg (in any state) ──▶ closed
//
// failed and closed are final: the leg says goodbye to its exit (unless the exit said it first, or
// no longer holds the session: closeLeg.quiet). It stops on closeLeg (closed stops at once; failed
// waits for the tunnel's closeLeg, so its Terminated, a system message, cannot overtake its
// report), or with its tunnel (as the current leg does when the tunnel closes: it says goodbye in
// Stopping and reports no closed); its device stops with it and releases netstack → device → bind. The
// tunnel hears Terminated once all of that is released. A leg that stops without being told (it
// panicked) is treated by its tunnel as failed. Every state is entered through enter, which does
// the Become, reports legChanged to the tunnel and logs, together. A leg to a WireGuard exit (a
// standard WireGuard server) takes the same states for other causes: leg_wireguard.go.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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
	legClosed
	legFailed
)

var legStateNames = [...]string{"negotiating", "handshaking", "up", "draining", "closed", "failed"}

func (s legState) String() string { return legStateNames[s] }

// final reports whether the leg is ending (it stops on its own; only Terminated follows).
func (s legState) final() bool { return s == legClosed || s == legFailed }

type legConfig struct {
	id           int
	tunnelID     string
	exitID       string
	setup        time.Duration // session request and first handshake together (OpenTunnel's context may shorten it)
	handshake    time.Duration // the tunnel's handshake_timeout: setup as configured, whatever the context
	udpBind      netip.Addr    // invalid: the local address routed to the exit
	keepalive    int           // WireGuard persistent keepalive, seconds
	identity     *signaling.Identity
	trust        signaling.ExitTrust
	certificate  string
	signaling    *actor.PID
	logger       *slog.Logger
	wg           *WireGuardExit // set: the exit is a standard WireGuard server (wireguard.go); no signaling
	probeTimeout time.Duration  // the tunnel's health probe_timeout: a WireGuard exit's health probe's handshake part
}

// drainLeg tells an up leg that no new connection will use it; after d it reports legDrainExpired.
type drainLeg struct{ d time.Duration }

// closeLeg ends a leg in any state: goodbye (unless quiet: the exit no longer holds the session),
// then the device's release.
type closeLeg struct {
	reason string
	quiet  bool
}

// legExitDraining tells the tunnel that the exit of one of its legs drains (tunnel_drain.go).
type legExitDraining struct {
	id        int
	sessionID string
	drain     time.Duration
}

// legChanged reports a leg's transition to its tunnel. Entering up, it carries what the tunnel
// needs to use the leg; entering failed, why.
type legChanged struct {
	id       int
	from, to legState
	cause    string
	err      error         // failed: why
	session  legSession    // from handshaking on
	rtt      time.Duration // up: the probe's round trip
}

// legSession is what the tunnel knows of a granted session.
type legSession struct {
	sessionID    string
	exitIdentity string
	device       *actor.PID                  // the leg's child; alive until the leg terminates
	dialer       connDialer                  // valid from up on; its stack is alive while device is
	probe        func(context.Context) error // valid from up on: one health probe through the leg
	probeBudget  time.Duration               // a health probe's bound when longer than probe_timeout (a WireGuard exit's check)
	traffic      func() (rx, tx uint64)      // valid from up on: the device's counters (deviceReady)
	handshake    func() time.Time            // from handshaking on, once the device is ready: its last completed handshake
	endpoint     netip.AddrPort
	addrs        []netip.Addr
}

type legActor struct {
	cfg       legConfig
	behavior  actor.Behavior
	state     legState
	tunnel    *actor.PID // the parent
	wgKey     signaling.Key
	resp      *messages.SessionResponse
	sess      legSession
	deadline  time.Time
	timers    legTimers
	saidBye   bool // the exit knows the session is over (we said goodbye, or it did)
	requested bool // the session request went out: from then on a goodbye is owed
	watched   bool // signaling routes the exit's goodbye for the session to us
	// A WireGuard exit's endpoint resolution (leg_wireguard.go): cancel and done, nil once awaited.
	resolving   context.CancelFunc
	resolveDone chan struct{}
}

func newLegProps(cfg legConfig) *actor.Props {
	return props(func() actor.Actor {
		l := &legActor{cfg: cfg, behavior: actor.NewBehavior()}
		l.behavior.Become(l.negotiating)
		return l
	})
}

func (l *legActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		l.tunnel = ctx.Parent()
		l.start(ctx)
	case *actor.Stopping:
		l.timers.stopAll()
		l.stopResolving()
		l.goodbye(ctx, "closed")
	case *closeLeg:
		if !l.state.final() {
			l.saidBye = l.saidBye || m.quiet
			l.end(ctx, legClosed, m.reason, nil)
		}
		ctx.Stop(ctx.Self())
	case *actor.Terminated:
		if l.sess.device != nil && m.Who.Equal(l.sess.device) && !l.state.final() {
			// The device stopped by itself (it failed, or panicked): it released what it held.
			l.sess.device = nil
			l.end(ctx, legFailed, "device stopped", fmt.Errorf("%w: device stopped", ErrDeviceFailed))
		}
	case *exitSaidGoodbye:
		if !l.state.final() {
			l.saidBye = true
			l.end(ctx, legFailed, "exit said goodbye: "+m.reason, fmt.Errorf("%w: %s", ErrExitGone, m.reason))
		}
	case *exitDraining:
		if !l.state.final() { // the tunnel decides what it means
			ctx.Send(l.tunnel, &legExitDraining{id: l.cfg.id, sessionID: m.sessionID, drain: m.drain})
		}
	case *deviceFailed:
		if !l.state.final() {
			l.end(ctx, legFailed, "device failed", fmt.Errorf("%w: %w", ErrDeviceFailed, m.err))
		}
	default:
		l.behavior.Receive(ctx)
	}
}

// enter is the one way into a state: Become, report to the tunnel, log.
func (l *legActor) enter(ctx actor.Context, to legState, cause string, err error, rtt time.Duration) {
	from := l.state
	l.state = to
	switch to {
	case legHandshaking:
		l.behavior.Become(l.handshaking)
	case legUp:
		l.behavior.Become(l.up)
	case legDraining:
		l.behavior.Become(l.draining)
	default:
		l.behavior.Become(l.ended)
	}
	l.cfg.logger.Debug("leg state", "leg", l.cfg.id, "exit", l.cfg.exitID, "from", from, "to", to, "cause", cause)
	ctx.Send(l.tunnel, &legChanged{id: l.cfg.id, from: from, to: to, cause: cause, err: err, session: l.sess, rtt: rtt})
}

// end enters a final state: timers stopped, goodbye said. The leg stops only when its tunnel
// tells it to (closeLeg), so that its Terminated (a system message) cannot overtake this report.
func (l *legActor) end(ctx actor.Context, to legState, cause string, err error) {
	l.timers.stopAll()
	l.goodbye(ctx, cause)
	l.enter(ctx, to, cause, err, 0)
}

func (l *legActor) fail(ctx actor.Context, err error) {
	l.end(ctx, legFailed, err.Error(), err)
}

// start asks the exit for a session under a fresh WireGuard key (a key reused across sessions
// stalls the exit's handshake for seconds).
func (l *legActor) start(ctx actor.Context) {
	if IsWireGuardExit(l.cfg.exitID) {
		l.startWireGuard(ctx)
		return
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	l.sess.sessionID = hex.EncodeToString(id[:])
	key, err := signaling.NewPrivateKey()
	if err != nil {
		l.fail(ctx, err)
		return
	}
	l.wgKey = key
	l.deadline = time.Now().Add(l.cfg.setup)
	l.timers.setup = sendAfter(ctx, l.cfg.setup, &legSetupExpired{})
	req := &messages.SessionRequest{SessionID: l.sess.sessionID, ExitID: l.cfg.exitID, WGPublicKey: key.Public().String(),
		Certificate: l.cfg.certificate}
	l.cfg.identity.SignSessionRequest(req, time.Now())
	l.watched, l.requested = true, true // signaling watches the session from its request on (unwatched in goodbye)
	ctx.Request(l.cfg.signaling, &requestSession{exitID: l.cfg.exitID, req: req, trust: l.cfg.trust, timeout: l.cfg.setup})
}

func (l *legActor) negotiating(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *endpointResolved:
		l.wgResolved(ctx, m)
	case *sessionReply:
		if m.err != nil {
			l.fail(ctx, m.err)
			return
		}
		l.resp = m.resp
		l.sess.exitIdentity = m.resp.ExitIdentity
		if err := l.startDevice(ctx); err != nil {
			l.fail(ctx, err)
			return
		}
		ctx.Send(l.cfg.signaling, &watchSession{sessionID: l.sess.sessionID, exitIdentity: m.resp.ExitIdentity, tunnel: ctx.Self()})
		l.enter(ctx, legHandshaking, "session granted by "+l.cfg.exitID, nil, 0)
	case *legSetupExpired:
		l.fail(ctx, fmt.Errorf("%w: %s did not come up in time", ErrHandshakeTimeout, l.cfg.exitID))
	}
}

func (l *legActor) handshaking(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *deviceReady:
		if l.cfg.wg != nil {
			l.wgDeviceReady(ctx, m)
			return
		}
		var exitAddrs []netip.Addr
		for _, s := range l.resp.ExitAddresses { // validated: addresses, at least one
			if a, err := netip.ParseAddr(s); err == nil {
				exitAddrs = append(exitAddrs, a.Unmap())
			}
		}
		d := netstack.Dialer{Stack: m.stack, Service: netip.AddrPortFrom(exitAddrs[0], l.resp.ConnectPort), Exit: exitAddrs, Direct: true}
		l.sess.dialer, l.sess.probe = d, d.PingUDP
		l.sess.traffic, l.sess.handshake = m.traffic, m.handshake
		exitKey, _ := signaling.ParseKey(l.resp.ExitWGPublicKey)
		l.addPeer(ctx, &addPeer{
			publicKey:  exitKey,
			allowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			endpoint:   l.sess.endpoint, keepalive: l.cfg.keepalive, sessionID: l.sess.sessionID, probe: d.Ping,
		})
	case *probeFailed:
		if errors.Is(m.err, ErrCheckFailed) { // a WireGuard exit answered, and its check failed
			l.fail(ctx, m.err)
			return
		}
		l.fail(ctx, fmt.Errorf("%w: first handshake and probe: %w", ErrHandshakeTimeout, m.err))
	case *messages.HandshakeCompleted:
		l.timers.setup.Stop()
		l.enter(ctx, legUp, "handshake completed", nil, m.RTT)
	case *legSetupExpired:
		l.fail(ctx, fmt.Errorf("%w: %s did not come up in time", ErrHandshakeTimeout, l.cfg.exitID))
	}
}

func (l *legActor) up(ctx actor.Context) {
	if m, ok := ctx.Message().(*drainLeg); ok {
		l.timers.drain = sendAfter(ctx, m.d, &legDrainExpired{leg: l.cfg.id})
		l.enter(ctx, legDraining, "draining", nil, 0)
	}
}

func (l *legActor) draining(ctx actor.Context) {
	if m, ok := ctx.Message().(*legDrainExpired); ok {
		ctx.Send(l.tunnel, m)
	}
}

func (l *legActor) ended(actor.Context) {}

func (l *legActor) startDevice(ctx actor.Context) error {
	endpoint, err := netip.ParseAddrPort(l.resp.Endpoint)
	if err != nil {
		return fmt.Errorf("%w: endpoint: %w", ErrSessionRefused, err)
	}
	l.sess.endpoint = endpoint
	for _, a := range l.resp.ClientAddresses {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("%w: client address: %w", ErrSessionRefused, err)
		}
		l.sess.addrs = append(l.sess.addrs, addr)
	}
	bindAddr, err := l.bindAddrFor(endpoint)
	if err != nil {
		return err
	}
	l.spawnDevice(ctx, l.wgKey, bindAddr, l.resp.MTU)
	return nil
}

// bindAddrFor is the address the leg's UDP bind listens on: udp_bind, else the local address
// routed towards endpoint.
func (l *legActor) bindAddrFor(endpoint netip.AddrPort) (netip.Addr, error) {
	if l.cfg.udpBind.IsValid() {
		return l.cfg.udpBind, nil
	}
	a, err := localAddrTowards(endpoint)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrDeviceFailed, err)
	}
	return a, nil
}

// spawnDevice starts the leg's device (its child) with key, on bindAddr, at the session's
// addresses (l.sess.addrs).
func (l *legActor) spawnDevice(ctx actor.Context, key signaling.Key, bindAddr netip.Addr, mtu int) {
	l.sess.device = ctx.Spawn(props(newDeviceActor(deviceConfig{
		role: roleClient, owner: l.cfg.tunnelID, privateKey: key, listen: netip.AddrPortFrom(bindAddr, 0),
		addresses: l.sess.addrs, mtu: mtu, logger: l.cfg.logger,
	})))
}

// goodbye tells the exit the session is over, so it releases the peer now rather than on a
// timeout. It goes out as soon as a session was requested: a grant still in flight is released too.
func (l *legActor) goodbye(ctx actor.Context, reason string) {
	if l.watched {
		l.watched = false
		ctx.Send(l.cfg.signaling, &unwatchSession{sessionID: l.sess.sessionID})
	}
	if l.saidBye || !l.requested {
		return
	}
	l.saidBye = true
	c := &messages.SessionClose{SessionID: l.sess.sessionID, Reason: truncateUTF8(reason, 200)}
	l.cfg.identity.SignSessionClose(c, time.Now())
	ctx.Send(l.cfg.signaling, &sendGoodbye{exitID: l.cfg.exitID, close: c})
}
