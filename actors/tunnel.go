package actors

// The tunnel actor owns one client tunnel: its proxy listeners and accept loops, its device (a
// child), and the connections proxied through it (children).
//
//	Negotiating ──session granted──▶ Handshaking ──HandshakeCompleted──▶ Up
//	     │                               │                               │
//	     └──refused / timeout / error────┴──device or probe failed──▶ Failed ──(released)──▶ Closed
//	Any state ──CloseTunnel──▶ Closing ──(released)──▶ Closed
//
// The proxy listeners are bound synchronously in Started, so a port in use fails the open at once.
// Release order when the actor stops: listeners (Stopping) → connections and device (children; the
// device releases netstack → device → UDP bind) → Closed is emitted (Stopped).

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/proxy"
	"github.com/warren-tunnel/warren/signaling"
)

// Sentinel errors of tunnels.
var (
	ErrHandshakeTimeout = errors.New("tunnel setup timed out")
	ErrSessionRefused   = errors.New("exit refused the session")
	ErrExitUnreachable  = errors.New("exit unreachable over signaling")
	ErrDeviceFailed     = errors.New("tunnel device failed")
	ErrTunnelClosed     = errors.New("tunnel closed")
)

// TunnelConfig is a client tunnel, resolved and validated by the engine.
type TunnelConfig struct {
	ID                string
	ExitID            string
	SOCKSAddr         string     // "" disables the SOCKS5 proxy
	HTTPAddr          string     // "" disables the HTTP proxy
	UDPBind           netip.Addr // the device's UDP address; invalid: the local address routed to the exit
	MTU               int
	HandshakeTimeout  time.Duration // session request and first handshake together
	Conn              ConnTimeouts  // each proxied connection's limits (Setup: its handshake and dial)
	MaxConns          int           // proxied connections at once; 0 unlimited
	MaxConnsPerSource int           // from one source address at once; 0 unlimited
	Keepalive         int           // WireGuard persistent keepalive, seconds
	Identity          *signaling.Identity
	Signaling         *actor.PID
	Events            *actor.PID
	Logger            *slog.Logger
	ReplyTo           *actor.PID // hears one messages.OpenTunnelResponse
}

// errLimit refuses a proxy connection over a limit: SOCKS5 general failure, HTTP 503.
type errLimit struct{ what string }

func (e errLimit) Error() string               { return "connection limit reached: " + e.what }
func (errLimit) ReplyCode() messages.ReplyCode { return messages.ReplyGeneralFailure }
func (errLimit) HTTPStatus() int               { return 503 }

// accept spawns a connection actor for a proxy connection, or a refusal over a limit.
func (t *tunnelActor) accept(ctx actor.Context, m *connAccepted) {
	if t.state != messages.StateUp || t.stopping {
		_ = m.c.Close()
		return
	}
	src := hostOf(m.c.RemoteAddr())
	t.nextConn++
	t.stats.Opened++
	cfg := connConfig{kind: connProxy, role: "client", id: t.nextConn, owner: t.cfg.ID, logger: t.cfg.Logger,
		limits: t.cfg.Conn, proxyKind: m.kind, client: m.c, dialer: t.dialer, events: t.cfg.Events, stopWhy: &t.stopWhy}
	var over string
	switch {
	case t.cfg.MaxConns > 0 && t.stats.Active >= t.cfg.MaxConns:
		over = fmt.Sprintf("tunnel has %d connections", t.stats.Active)
	case t.cfg.MaxConnsPerSource > 0 && t.sources[src] >= t.cfg.MaxConnsPerSource:
		over = fmt.Sprintf("source %s has %d connections", src, t.sources[src])
	}
	if over != "" {
		if t.refusing >= max(t.cfg.MaxConns, 64) { // refusals are bounded too: beyond this, just close
			_ = m.c.Close()
			ev := &messages.ConnectionEnded{Owner: t.cfg.ID, Role: "client", ID: t.nextConn,
				Incoming: messages.EndLimit, Outgoing: messages.EndLimit, Refused: true}
			t.ended(ctx, ev)
			emit(ctx, t.cfg.Events, &messages.ConnectionOpened{Owner: t.cfg.ID, Role: "client", ID: t.nextConn})
			emit(ctx, t.cfg.Events, ev)
			return
		}
		t.refusing++
		cfg.kind, cfg.refusal = connRefuse, errLimit{over}
		pid := ctx.Spawn(props(newConnActor(cfg)))
		t.sourceOf[pid.Id] = "\x00refusal"
		return
	}
	t.stats.Active++
	t.sources[src]++
	pid := ctx.Spawn(props(newConnActor(cfg)))
	t.sourceOf[pid.Id] = src
}

// ended counts a connection that ended (its actor has stopped and released its sockets).
func (t *tunnelActor) ended(ctx actor.Context, m *messages.ConnectionEnded) {
	if sender := ctx.Sender(); sender != nil {
		if src, ok := t.sourceOf[sender.Id]; ok {
			delete(t.sourceOf, sender.Id)
			if src == "\x00refusal" {
				t.refusing--
			} else {
				t.stats.Active--
				if t.sources[src]--; t.sources[src] <= 0 {
					delete(t.sources, src)
				}
			}
		}
	}
	t.stats.Ended++
	t.stats.ByEnd[messages.SideIncoming][m.Incoming]++
	t.stats.ByEnd[messages.SideOutgoing][m.Outgoing]++
	t.stats.Bytes.In += m.BytesIn
	t.stats.Bytes.Out += m.BytesOut
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

func newByEnd() map[messages.Side]map[messages.EndReason]uint64 {
	return map[messages.Side]map[messages.EndReason]uint64{messages.SideIncoming: {}, messages.SideOutgoing: {}}
}

func cloneByEnd(m map[messages.Side]map[messages.EndReason]uint64) map[messages.Side]map[messages.EndReason]uint64 {
	out := newByEnd()
	for side, reasons := range m {
		for r, n := range reasons {
			out[side][r] = n
		}
	}
	return out
}

// setupExpired: the setup deadline passed before the tunnel came Up.
type setupExpired struct{}

type connAccepted struct {
	c    net.Conn
	kind proxy.Kind
}

type proxyListener struct {
	ln   net.Listener
	kind proxy.Kind
	stop chan struct{} // closed in Stopping, before the listener
	end  chan struct{} // closed when its accept loop returned; nil until the loop starts
}

type tunnelActor struct {
	cfg         TunnelConfig
	behavior    actor.Behavior
	state       messages.TunnelState
	listeners   []*proxyListener // bound in Started, closed in Stopping
	sessionID   string
	session     *messages.SessionResponse
	wgKey       signaling.Key
	device      *actor.PID
	stack       *netstack.Stack // the device's; alive while device is
	dialer      netstack.Dialer
	info        messages.TunnelInfo
	replied     bool
	deadline    time.Time   // setup (Negotiating + Handshaking) must finish by then
	timer       *time.Timer // fires setupExpired at deadline; stopped when Up and in Stopping
	stopping    bool        // set in Stopping: nothing new is started
	saidGoodbye bool
	stopWhy     atomic.Pointer[messages.EndReason] // why children are being stopped; read by them
	stats       messages.ConnectionStats
	sources     map[string]int    // active connections per source address
	sourceOf    map[string]string // connection child PID id → its source address
	refusing    int               // refusal actors running
	failErr     error             // why the tunnel failed; answered to the opener once released
	closers     []*actor.PID      // CloseTunnel callers, answered once released
	nextConn    uint64
}

// NewTunnelProps returns the props of a tunnel actor.
func NewTunnelProps(cfg TunnelConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("tunnel", cfg.ID)
	return props(func() actor.Actor {
		t := &tunnelActor{cfg: cfg, behavior: actor.NewBehavior(), state: messages.StateNegotiating,
			sources: map[string]int{}, sourceOf: map[string]string{}}
		t.stats.ByEnd = newByEnd()
		t.behavior.Become(t.negotiating)
		return t
	})
}

func (t *tunnelActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *connAccepted:
		// Handled here in every state: a connection accepted just before the listener closed must
		// not be left open in the mailbox.
		t.accept(ctx, m)
		return
	case *messages.ConnectionEnded:
		t.ended(ctx, m)
		return
	case *messages.GetStats:
		st := t.stats
		st.ByEnd = cloneByEnd(t.stats.ByEnd)
		ctx.Respond(&messages.StatsResponse{Stats: st})
		return
	case *actor.Stopping:
		t.stopping = true
		if t.timer != nil {
			t.timer.Stop()
		}
		if t.state != messages.StateClosing && t.state != messages.StateFailed {
			// stopped by its parent (engine shutdown): still release the exit's session
			why := messages.EndEngineShutdown
			t.stopWhy.Store(&why)
			t.goodbye(ctx, "engine shutdown")
			t.transition(ctx, messages.StateClosing, "engine shutdown")
		}
		for _, l := range t.listeners {
			if l.stop != nil {
				close(l.stop)
			}
			_ = l.ln.Close()
			if l.end != nil {
				<-l.end
			}
		}
		return
	case *actor.Stopped:
		// Everything is released now: only now do the opener (on failure) and closers hear back.
		t.transition(ctx, messages.StateClosed, "released")
		if t.failErr != nil {
			t.reply(ctx, t.failErr)
		} else {
			t.reply(ctx, fmt.Errorf("%w: before it came up", ErrTunnelClosed))
		}
		for _, c := range t.closers {
			ctx.Send(c, &messages.CloseTunnelResponse{})
		}
		return
	case *messages.GetTunnelInfo:
		info := t.info
		info.State = t.state
		ctx.Respond(&messages.TunnelInfoResponse{Info: info})
		return
	case *messages.CloseTunnel:
		if ctx.Sender() != nil {
			t.closers = append(t.closers, ctx.Sender())
		}
		t.close(ctx, m.Reason)
		return
	}
	t.behavior.Receive(ctx)
}

func (t *tunnelActor) transition(ctx actor.Context, to messages.TunnelState, cause string) {
	from := t.state
	t.state = to
	t.cfg.Logger.Info("tunnel state", "from", from, "to", to, "cause", cause)
	emit(ctx, t.cfg.Events, &messages.TunnelStateChanged{TunnelID: t.cfg.ID, From: from, To: to, Cause: cause, At: time.Now()})
}

func (t *tunnelActor) negotiating(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		t.info = messages.TunnelInfo{ID: t.cfg.ID, ExitID: t.cfg.ExitID}
		if err := t.bindListeners(); err != nil {
			t.fail(ctx, err)
			return
		}
		t.deadline = time.Now().Add(t.cfg.HandshakeTimeout)
		system, self := ctx.ActorSystem(), ctx.Self()
		t.timer = time.AfterFunc(t.cfg.HandshakeTimeout, func() { system.Root.Send(self, &setupExpired{}) })
		t.requestSession(ctx)
	case *sessionReply:
		if m.err != nil {
			t.fail(ctx, m.err)
			return
		}
		t.session = m.resp
		t.info.SessionID = t.sessionID
		if err := t.startDevice(ctx); err != nil {
			t.fail(ctx, err)
			return
		}
		t.transition(ctx, messages.StateHandshaking, "session granted")
		t.behavior.Become(t.handshaking)
	case *setupExpired:
		t.fail(ctx, fmt.Errorf("%w: no session within %v", ErrHandshakeTimeout, t.cfg.HandshakeTimeout))
	}
}

func (t *tunnelActor) handshaking(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *deviceReady:
		t.stack = m.stack
		exitAddr, _ := netip.ParseAddr(t.session.ExitAddresses[0])
		t.dialer = netstack.Dialer{Stack: m.stack, Service: netip.AddrPortFrom(exitAddr, t.session.ConnectPort)}
		exitKey, _ := signaling.ParseKey(t.session.ExitWGPublicKey)
		f := ctx.RequestFuture(t.device, &addPeer{
			publicKey:  exitKey,
			allowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			endpoint:   t.info.ExitEndpoint, keepalive: t.cfg.Keepalive, sessionID: t.sessionID,
			probe: &t.dialer, notify: ctx.Self(), probeLimit: time.Until(t.deadline),
		}, t.cfg.HandshakeTimeout)
		ctx.ReenterAfter(f, func(res any, err error) {
			if r, ok := res.(*addPeerResponse); ok && r.err != nil {
				err = r.err
			}
			if err != nil && t.state == messages.StateHandshaking {
				t.fail(ctx, fmt.Errorf("%w: %w", ErrDeviceFailed, err))
			}
		})
	case *deviceFailed:
		t.fail(ctx, fmt.Errorf("%w: %w", ErrDeviceFailed, m.err))
	case *probeFailed:
		t.fail(ctx, fmt.Errorf("%w: first handshake and probe: %w", ErrHandshakeTimeout, m.err))
	case *messages.HandshakeCompleted:
		t.timer.Stop()
		t.info.UpSince = time.Now()
		t.transition(ctx, messages.StateUp, fmt.Sprintf("handshake completed, probe rtt %v", m.RTT.Round(time.Microsecond)))
		t.behavior.Become(t.up)
		t.startAccepting(ctx)
		t.reply(ctx, nil)
	case *setupExpired:
		t.fail(ctx, fmt.Errorf("%w: no handshake within %v", ErrHandshakeTimeout, t.cfg.HandshakeTimeout))
	case *actor.Terminated:
		if m.Who.Equal(t.device) {
			t.fail(ctx, fmt.Errorf("%w: device stopped", ErrDeviceFailed))
		}
	}
}

func (t *tunnelActor) up(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Terminated:
		if m.Who.Equal(t.device) {
			t.fail(ctx, fmt.Errorf("%w: device stopped", ErrDeviceFailed))
		}
	}
}

// closing and failed ignore everything but the lifecycle messages Receive handles.
func (t *tunnelActor) closing(actor.Context) {}

func (t *tunnelActor) close(ctx actor.Context, reason string) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	if reason == "" {
		reason = "closed by owner"
	}
	t.goodbye(ctx, reason)
	t.transition(ctx, messages.StateClosing, reason)
	t.behavior.Become(t.closing)
	ctx.Stop(ctx.Self())
}

func (t *tunnelActor) fail(ctx actor.Context, err error) {
	if t.state == messages.StateClosing || t.state == messages.StateFailed {
		return
	}
	t.goodbye(ctx, "failed: "+err.Error())
	t.failErr = err
	t.transition(ctx, messages.StateFailed, err.Error())
	t.behavior.Become(t.closing)
	ctx.Stop(ctx.Self())
}

// goodbye tells the exit the session is over, so it releases the peer now rather than on a timeout.
// It is sent as soon as a session was requested: a grant still in flight is released too.
func (t *tunnelActor) goodbye(ctx actor.Context, reason string) {
	if t.sessionID == "" || t.saidGoodbye {
		return
	}
	t.saidGoodbye = true
	c := &messages.SessionClose{SessionID: t.sessionID, Reason: truncateUTF8(reason, 200)}
	t.cfg.Identity.SignSessionClose(c, time.Now())
	ctx.Send(t.cfg.Signaling, &sendGoodbye{exitID: t.cfg.ExitID, close: c})
}

func (t *tunnelActor) reply(ctx actor.Context, err error) {
	if t.replied || t.cfg.ReplyTo == nil {
		return
	}
	t.replied = true
	info := t.info
	info.State = t.state
	if err == nil {
		info.State = messages.StateUp
	}
	ctx.Send(t.cfg.ReplyTo, &messages.OpenTunnelResponse{Info: info, Err: err})
}

func (t *tunnelActor) bindListeners() error {
	for _, l := range []struct {
		addr string
		kind proxy.Kind
	}{{t.cfg.SOCKSAddr, proxy.SOCKS5}, {t.cfg.HTTPAddr, proxy.HTTP}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("%s proxy listen on %s: %w", l.kind, l.addr, err)
		}
		t.listeners = append(t.listeners, &proxyListener{ln: ln, kind: l.kind})
		if l.kind == proxy.SOCKS5 {
			t.info.SOCKSAddr = ln.Addr().String()
		} else {
			t.info.HTTPAddr = ln.Addr().String()
		}
	}
	return nil
}

func (t *tunnelActor) startAccepting(ctx actor.Context) {
	system, self := ctx.ActorSystem(), ctx.Self()
	for _, l := range t.listeners {
		l.stop, l.end = make(chan struct{}), make(chan struct{})
		kind := l.kind
		go acceptLoop(l.ln, l.stop, l.end, func(c net.Conn) { system.Root.Send(self, &connAccepted{c: c, kind: kind}) })
	}
}

func (t *tunnelActor) requestSession(ctx actor.Context) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	t.sessionID = hex.EncodeToString(id[:])
	key, err := signaling.NewPrivateKey()
	if err != nil {
		t.fail(ctx, err)
		return
	}
	t.wgKey = key
	req := &messages.SessionRequest{SessionID: t.sessionID, ExitID: t.cfg.ExitID, WGPublicKey: key.Public().String()}
	t.cfg.Identity.SignSessionRequest(req, time.Now())
	ctx.Request(t.cfg.Signaling, &requestSession{exitID: t.cfg.ExitID, req: req, timeout: t.cfg.HandshakeTimeout})
}

func (t *tunnelActor) startDevice(ctx actor.Context) error {
	endpoint, err := netip.ParseAddrPort(t.session.Endpoint)
	if err != nil {
		return fmt.Errorf("%w: endpoint: %w", ErrSessionRefused, err)
	}
	t.info.ExitEndpoint = endpoint
	var addrs []netip.Addr
	for _, a := range t.session.ClientAddresses {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("%w: client address: %w", ErrSessionRefused, err)
		}
		addrs = append(addrs, addr)
	}
	t.info.ClientAddresses = addrs
	bindAddr := t.cfg.UDPBind
	if !bindAddr.IsValid() {
		if bindAddr, err = localAddrTowards(endpoint); err != nil {
			return fmt.Errorf("%w: %w", ErrDeviceFailed, err)
		}
	}
	t.device = ctx.Spawn(props(newDeviceActor(deviceConfig{
		role: roleClient, owner: t.cfg.ID, privateKey: t.wgKey, listen: netip.AddrPortFrom(bindAddr, 0),
		addresses: addrs, mtu: t.session.MTU, logger: t.cfg.Logger,
	})))
	ctx.Watch(t.device)
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

// truncateUTF8 cuts s to at most n bytes on a character boundary, so that what is signed is what
// JSON carries.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
