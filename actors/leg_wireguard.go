package actors

// The leg actor's path to a WireGuard exit (wireguard.go): the same states as to a Warren exit
// (leg.go), entered for other causes, with no signaling at all:
//
//	negotiating: the server's endpoint resolves (a goroutine the leg owns: cancelled and awaited
//	             in Stopping, bounded by the setup deadline) ──resolved──▶ handshaking
//	handshaking: the device comes up with the configured key; the peer is added with the
//	             configured endpoint, preshared key, AllowedIPs and keepalive; its probe forces a
//	             handshake and runs the check ──passed (HandshakeCompleted)──▶ up
//	up, draining, failed, closed: as to a Warren exit, but nothing is said to the server on the
//	             way out (WireGuard has no goodbye: the server forgets the session on its own).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

var (
	// ErrEndpointUnresolved: a WireGuard exit's endpoint did not resolve to an address.
	ErrEndpointUnresolved = errors.New("exit endpoint did not resolve")
	// ErrUnknownExit: a WireGuard exit id the tunnel has no configuration for.
	ErrUnknownExit = errors.New("no such WireGuard exit is configured")
)

// endpointResolved is the resolver goroutine's answer.
type endpointResolved struct {
	ap  netip.AddrPort
	err error
}

// startWireGuard begins a leg to a WireGuard exit: the endpoint resolves off the actor.
func (l *legActor) startWireGuard(ctx actor.Context) {
	if l.cfg.wg == nil { // an id the tunnel has no configuration for
		l.fail(ctx, fmt.Errorf("%w: %s", ErrUnknownExit, l.cfg.exitID))
		return
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	l.sess.sessionID = "wg-" + hex.EncodeToString(id[:]) // names the leg in logs and the health hub
	l.sess.exitIdentity = l.cfg.wg.identity()
	l.deadline = time.Now().Add(l.cfg.setup)
	l.timers.setup = sendAfter(ctx, l.cfg.setup, &legSetupExpired{})
	rctx, cancel := context.WithDeadline(context.Background(), l.deadline)
	l.resolving, l.resolveDone = cancel, make(chan struct{})
	system, self, endpoint, bind, done := ctx.ActorSystem(), ctx.Self(), l.cfg.wg.Endpoint, l.cfg.udpBind, l.resolveDone
	go func() {
		defer close(done)
		defer cancel()
		ap, err := resolveEndpoint(rctx, endpoint, bind)
		system.Root.Send(self, &endpointResolved{ap: ap, err: err})
	}()
}

// stopResolving cancels the endpoint's resolution, if one runs, and waits for its goroutine
// (Stopping only; bounded: the resolver honours its context).
func (l *legActor) stopResolving() {
	if l.resolving == nil {
		return
	}
	l.resolving()
	<-l.resolveDone
	l.resolving = nil
}

// wgResolved: the endpoint is known; the device comes up with the configured key.
func (l *legActor) wgResolved(ctx actor.Context, m *endpointResolved) {
	if m.err != nil {
		l.fail(ctx, fmt.Errorf("%w: %s: %w", ErrEndpointUnresolved, l.cfg.exitID, m.err))
		return
	}
	w := l.cfg.wg
	l.sess.endpoint, l.sess.addrs = m.ap, w.Addresses
	bindAddr, err := l.bindAddrFor(m.ap)
	if err != nil {
		l.fail(ctx, err)
		return
	}
	if bindAddr.Is4() != m.ap.Addr().Is4() {
		l.fail(ctx, fmt.Errorf("%w: udp_bind %s cannot reach endpoint %s", ErrDeviceFailed, bindAddr, m.ap))
		return
	}
	l.spawnDevice(ctx, w.PrivateKey, bindAddr, w.MTU)
	l.enter(ctx, legHandshaking, fmt.Sprintf("endpoint %s resolved to %s", w.Endpoint, m.ap), nil, 0)
}

// wgDeviceReady: the peer is added and its probe (a forced handshake, then the check) runs.
func (l *legActor) wgDeviceReady(ctx actor.Context, m *deviceReady) {
	w := l.cfg.wg
	d := w.dialer(m.stack)
	l.sess.dialer, l.sess.probe = d, wgProbe(m.dev, d, w.Check, l.cfg.probeTimeout)
	if w.Check != (WireGuardCheck{}) {
		// A health probe is a handshake within probe_timeout, then the check, which may take
		// several round trips (DNS, TCP, TLS, HTTP): it gets as long as a leg's setup as
		// configured (handshake_timeout), not this leg's, which a short OpenTunnel context cut.
		l.sess.probeBudget = l.cfg.probeTimeout + l.cfg.handshake
	}
	l.sess.traffic, l.sess.handshake = m.traffic, m.handshake
	keepalive := l.cfg.keepalive
	if w.Keepalive > 0 {
		keepalive = w.Keepalive
	}
	l.addPeer(ctx, &addPeer{publicKey: w.PublicKey, psk: w.PresharedKey, allowedIPs: w.AllowedIPs,
		endpoint: l.sess.endpoint, keepalive: keepalive, sessionID: l.sess.sessionID, probe: wgProbe(m.dev, d, w.Check, 0)})
}

// addPeer adds the exit's peer to the leg's device, with the first probe (fills in the notify and
// limit); a failure fails the leg.
func (l *legActor) addPeer(ctx actor.Context, m *addPeer) {
	m.notify = ctx.Self()
	m.probeLimit = max(time.Until(l.deadline), minWait)
	f := ctx.RequestFuture(l.sess.device, m, m.probeLimit)
	reenter(ctx, f, func(res any, err error) {
		if r, ok := res.(*addPeerResponse); ok && r.err != nil {
			err = r.err
		}
		if err != nil && l.state == legHandshaking {
			l.fail(ctx, fmt.Errorf("%w: %w", ErrDeviceFailed, err))
		}
	})
}
