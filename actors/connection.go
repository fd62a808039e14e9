package actors

// The connection actor owns one proxied connection (client) or forwarded flow (exit): both of its
// sockets, the goroutines that move its bytes, and its timers. Bytes never pass through a mailbox;
// the actor hears only of setup, each direction's end, idle checks, timers and the end. Its setup
// goroutine is in connection_setup.go, the plain-HTTP request loop in connection_forward.go, the
// idle check in connection_idle.go, end reasons and the report in connection_end.go, UDP associations
// in connection_udp.go.
//
//	Setup ──established──▶ Relaying ──both directions at EOF──────────────────────▶ stop
//	  │                       │  a side failed (reset, error) ── both reset at once ───▶ stop
//	  │                       │  inactivity / max lifetime / EndConnection
//	  │                       ▼
//	  │                    Ending: FIN both ways; the grace period runs ──both done──▶ stop
//	  │                       └── grace expired: reset both ────────────────────────▶ stop
//	  └──refused (limit, policy, dial failed, bad request, auth, timeout)───────────▶ stop
//	any state ──endWith(why) from the owner: why recorded; reset if relaying─────────▶ stop
//
// A plain-HTTP (absolute-URI) proxy connection relays in one goroutine instead of two copy loops:
// proxy.ServeForward's request loop, which owns the upstream connections it dials and reports to
// the actor once, when the client connection is over (forwardDone); each request is logged from
// that goroutine, never through the mailbox.
//
// A SOCKS5 UDP association (client), or its exit half, relays datagrams in loops instead of the
// copy loops (connection_udp.go): Relaying until the first loop ends (a control connection closed
// or failed, a socket failed), then every socket is closed at once — datagrams have no half-close
// and no grace — and the actor stops when the last loop has reported. Inactivity, max lifetime and
// EndConnection close everything at once too.
//
// Each side's end reason is recorded once, by the first thing that ends it (endWith: what its owner
// says). Stopping (after any of the above, or stopped from outside: tunnel_closed) closes both
// sockets, stops the timers and waits for the goroutines; Stopped logs one line and reports
// ConnectionEnded.

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/proxy"
)

type connKind int

const (
	connProxy   connKind = iota + 1 // client: a local proxy connection relayed through the tunnel
	connRefuse                      // client: a proxy connection refused over a limit
	connService                     // exit: a connect-service request from a client
	connFlowTCP                     // exit: a TCP flow to any destination (e.g. a static peer's)
	connFlowUDP                     // exit: a UDP flow
)

// ConnTimeouts are a connection's time limits.
type ConnTimeouts struct {
	Setup         time.Duration // proxy handshake and dial (client); request and dial (exit)
	Idle          time.Duration // no bytes either way for this long ends the connection; 0 never
	KeepaliveIdle time.Duration // Idle for connections whose client sends TCP keep-alive probes
	MaxLifetime   time.Duration // 0: none
	Grace         time.Duration // after a graceful end (FIN), how long before a reset
	IdleExempt    func(target string) bool
}

type connConfig struct {
	kind    connKind
	role    string // "client" or "exit"
	id      uint64
	owner   string // tunnel id or exit/session id, for the log line and stats
	logger  *slog.Logger
	limits  ConnTimeouts
	events  *actor.PID  // hears ConnectionEnded (the engine's stats), besides the parent
	live    *connLive   // its byte counts, made by the owner that reads them (nil: made here)
	totals  *ByteTotals // the role's byte totals, counted as bytes move (nil: none); with live made here
	refusal error       // connRefuse: the error to answer with

	// client
	handshake time.Duration // a proxy client's handshake budget, before Setup's dial (0: none)
	proxyKind proxy.Kind
	proxyOpts proxy.Options // the proxy protocol's auth, handshake budget and header limit (from the tunnel's config)
	client    net.Conn
	dialer    connDialer
	udp       UDPLimits // SOCKS5 UDP associations (connection_udp.go)

	// exit
	in        net.Conn // connect-service connection from the tunnel
	overLimit bool     // in came over the session's limit: it may ask a refusal query, nothing else
	tcpFlow   *netstack.TCPFlow
	udpFlow   *netstack.UDPFlow
	egress    *netstack.EgressPolicy
	stack     *netstack.Stack // the exit's stack, alive while its device actor is: UDP associations' sockets
	udpIdle   time.Duration   // an association's exit half ends after this long without a datagram
	udpMax    int             // destinations per association; 0 unlimited
}

// EndConnection asks a connection to end gracefully for a reason (a drain that ran out of time).
type EndConnection struct{ Reason messages.EndReason }

type connActor struct {
	cfg      connConfig
	system   *actor.ActorSystem
	self     *actor.PID
	parent   *actor.PID         // admits the connection once its handshake is done (connAdmit)
	cancel   context.CancelFunc // cancels setup
	wg       sync.WaitGroup     // setup and pump goroutines
	result   chan any           // setup's outcome; buffered 1, so Stopping can reclaim it
	in, out  net.Conn           // alive until Stopping; in faces the client/tunnel, out the destination/tunnel
	target   string
	source   string
	started  time.Time
	live     *connLive // bytes in → out (as accepted by out) and out → in (as accepted by in); read by the owner
	pumps    int       // directions still running
	ending   bool      // graceful end under way
	closedUs bool      // we closed or reset both sockets: later I/O errors are our own doing
	refused  bool
	ping     bool               // a connect-protocol ping (a health probe): not a connection, not counted
	opened   bool               // ConnectionOpened was emitted
	inWhy    messages.EndReason // set once
	outWhy   messages.EndReason // set once
	timers   connTimers         // idle check, lifetime and grace; stopped in Stopping
	udp      *udpParts          // a UDP association's other sockets (connection_udp.go); nil for any other connection

	// idle checks
	lastTotal   int64
	idleSince   time.Time
	lastSegsIn  uint32
	lastSegsOut uint32
	keepalive   bool
	exemptIdle  bool
}

type connSetupDone struct{}

// connAdmit asks the parent, from the setup goroutine, whether a proxy connection that has
// finished its handshake (and is about to dial) may be established: it then no longer counts
// against the pending-handshake limit, and counts against max_connections. The reply is
// *connAdmitted.
type connAdmit struct {
	pid    *actor.PID
	target string // where the client asked to go (the first request's, for plain HTTP)
	udp    bool   // a UDP association: max_associations applies too
}

// connAdmitted answers connAdmit: err refuses (the connection was evicted, or the tunnel is full).
type connAdmitted struct{ err error }

// pingServed tells the parent a ping ended: it held a slot but is no connection.
type pingServed struct{}

type connEstablished struct {
	in, out  net.Conn
	inReader interface{ Read([]byte) (int, error) }
	target   string
	forward  *proxy.Session // plain HTTP: served by proxy.ServeForward instead of the copy loops
	udp      *udpParts      // a UDP association: datagram loops instead of the copy loops
}

// forwardDone reports the end of a plain-HTTP request loop (proxy.ServeForward).
type forwardDone struct{ err error }

type connSetupFailed struct {
	ping   bool
	reason messages.EndReason
	target string
	err    error
}

func newConnActor(cfg connConfig) actor.Producer {
	return func() actor.Actor {
		live := cfg.live
		if live == nil {
			live = newConnLive(cfg.totals)
		}
		return &connActor{cfg: cfg, live: live}
	}
}

func (c *connActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.system, c.self, c.parent, c.started = ctx.ActorSystem(), ctx.Self(), ctx.Parent(), time.Now()
		c.in = c.cfg.client
		if c.cfg.in != nil {
			c.in = c.cfg.in
		}
		switch {
		case c.in != nil && c.in.RemoteAddr() != nil:
			c.source = c.in.RemoteAddr().String()
		case c.cfg.tcpFlow != nil: // a flow's connection is accepted in setup: its source is known now
			c.source = c.cfg.tcpFlow.Src.String()
		case c.cfg.udpFlow != nil:
			c.source = c.cfg.udpFlow.Src.String()
		}
		var setupCtx context.Context
		setupCtx, c.cancel = context.WithTimeout(context.Background(), c.cfg.handshake+c.cfg.limits.Setup)
		c.result = make(chan any, 1)
		c.wg.Add(1)
		goOn(c.system, func() { c.setup(setupCtx) })
		if c.cfg.limits.MaxLifetime > 0 {
			c.timers.lifetime = sendAfter(ctx, c.cfg.limits.MaxLifetime, &connLifetimeExpired{})
		}
		if c.cfg.kind != connService { // a service connection may turn out to be a ping; counted when set up
			c.emitOpened(ctx)
		}
	case *connSetupDone:
		r := <-c.result
		if f, ok := r.(*connSetupFailed); !(ok && f.ping) {
			c.emitOpened(ctx)
		}
		c.adopt(ctx, r)
	case *pumpDone:
		c.pumpEnded(ctx, m)
	case *forwardDone:
		c.forwardEnded(ctx, m)
	case *udpPartDone:
		c.udpPartEnded(ctx, m)
	case *connIdleCheck:
		c.idleCheck(ctx)
	case *connLifetimeExpired:
		c.endGracefully(ctx, messages.EndMaxLifetime)
	case *EndConnection:
		c.endGracefully(ctx, m.Reason)
	case *connGraceExpired:
		abort(c.in) // the other sides did not finish in time: reset
		abort(c.out)
		c.cancel() // a request loop resets its upstream
	case *endWith:
		c.setBoth(m.why) // the owner ends: at once, no grace (Stopping aborts a relay)
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		c.setBoth(messages.EndTunnelClosed) // stopped without being told why: its owner was stopped
		c.timers.stopAll()
		c.cancel()
		if c.pumps > 0 && c.udp == nil { // stopped while relaying: the owner is going away, no grace
			abort(c.in)
			abort(c.out)
		} else {
			closeQuietly(c.in)
			closeQuietly(c.out)
		}
		if c.udp != nil {
			c.udp.close()
		}
		c.wg.Wait()
		select { // setup finished but its report was not handled: release what it opened
		case r := <-c.result:
			switch r := r.(type) {
			case *connEstablished:
				closeQuietly(r.in)
				closeQuietly(r.out)
				if r.udp != nil {
					r.udp.close()
				}
			case *connSetupFailed:
				c.ping = r.ping
			}
		default:
		}
	case *actor.Stopped:
		c.report(ctx)
	}
}

// adopt takes over setup's outcome.
func (c *connActor) adopt(ctx actor.Context, r any) {
	switch m := r.(type) {
	case *connEstablished:
		c.in, c.out, c.target = m.in, m.out, m.target
		c.cancel()
		if m.udp != nil {
			c.runUDP(m.udp)
			c.adoptUDPLimits()
		} else if m.forward != nil {
			c.out = nil // the request loop owns its upstream connections
			c.serveForward(m.forward)
		} else {
			c.pumps = 2
			c.wg.Add(2)
			report := func(d *pumpDone) { c.system.Root.Send(c.self, d) }
			goOn(c.system, func() {
				defer c.wg.Done()
				pump(c.out, m.inReader, &c.live.in, func(d *pumpDone) { d.toOut = true; report(d) })
			})
			goOn(c.system, func() { defer c.wg.Done(); pump(c.in, c.out, &c.live.out, report) })
		}
		if c.cfg.limits.Idle > 0 {
			c.exemptIdle = c.cfg.limits.IdleExempt != nil && c.cfg.limits.IdleExempt(c.target)
			c.idleSince = time.Now()
			if c.udp == nil {
				c.lastSegsIn, c.lastSegsOut, _, _ = segments(c.in)
			}
			if !c.exemptIdle {
				c.armIdle(ctx)
			}
		}
	case *connSetupFailed:
		c.target, c.refused, c.ping = m.target, true, m.ping
		c.setBoth(m.reason)
		c.cfg.logger.Debug("connection refused", "conn", c.cfg.id, "target", m.target, "reason", m.reason, "err", m.err)
		ctx.Stop(ctx.Self())
	}
}

// pumpEnded records which side ended and how, and decides whether the connection is over.
func (c *connActor) pumpEnded(ctx actor.Context, d *pumpDone) {
	c.pumps--
	srcFail, dstFail, src := c.failIn, c.failOut, c.setIn // in → out reads in, writes out
	if !d.toOut {
		srcFail, dstFail, src = c.failOut, c.failIn, c.setOut
	}
	switch {
	case c.ending || c.closedUs:
		// we ended it (FIN then reset, or closed both after a failure or a one-request end): its
		// reasons are set; errors from our own close are not the peer's doing
	case d.readErr != nil:
		srcFail(classify(d.readErr))
	case d.writeErr != nil:
		dstFail(classify(d.writeErr))
	case d.eof:
		src(messages.EndNormal)
	}
	switch {
	case d.readErr != nil || d.writeErr != nil:
		// One side failed: the other one cannot be completed. End both at once.
		why := c.inWhy
		if why == "" || why == messages.EndNormal {
			why = c.outWhy
		}
		c.setBoth(why)
		c.closedUs = true
		abort(c.in)
		abort(c.out)
	case d.endAll:
		c.setBoth(messages.EndNormal)
		c.closedUs = true
		closeQuietly(c.in)
		closeQuietly(c.out)
	}
	if c.pumps == 0 {
		c.setBoth(messages.EndNormal)
		ctx.Stop(ctx.Self())
	}
}

// endGracefully ends the connection for reason: FIN both ways now, reset after the grace period.
func (c *connActor) endGracefully(ctx actor.Context, reason messages.EndReason) {
	if c.ending {
		return
	}
	c.ending = true
	c.setBoth(reason)
	if c.pumps == 0 { // still in setup
		ctx.Stop(ctx.Self())
		return
	}
	if c.udp != nil { // datagrams have no half-close: everything closes now
		c.closeUDP()
		return
	}
	for _, s := range []net.Conn{c.in, c.out} {
		if cw, ok := s.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			closeQuietly(s)
		}
	}
	c.timers.grace = sendAfter(ctx, c.cfg.limits.Grace, &connGraceExpired{})
}

func (c *connActor) emitOpened(ctx actor.Context) {
	if !c.opened {
		c.opened = true
		emit(ctx, c.cfg.events, &messages.ConnectionOpened{Owner: c.cfg.owner, Role: c.cfg.role, ID: c.cfg.id})
	}
}
