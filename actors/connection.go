package actors

// The connection actor owns one proxied connection (client) or forwarded flow (exit): both of its
// sockets, the goroutines that move its bytes, and its timers. Bytes never pass through a mailbox;
// the actor hears only of setup, each direction's end, idle checks, timers and the end.
//
//	Setup ──established──▶ Relaying ──both directions at EOF──────────────────────▶ stop
//	  │                       │  a side failed (reset, error) ── both closed at once ──▶ stop
//	  │                       │  inactivity / max lifetime / EndConnection
//	  │                       ▼
//	  │                    Ending: FIN both ways; the grace period runs ──both done──▶ stop
//	  │                       └── grace expired: reset both ────────────────────────▶ stop
//	  └──refused (limit, policy, dial failed, bad request, auth, timeout)───────────▶ stop
//
// A plain-HTTP (absolute-URI) proxy connection relays in one goroutine instead of two copy loops:
// proxy.ServeForward's request loop, which owns the upstream connections it dials and reports to
// the actor once, when the client connection is over (forwardDone); each request is logged from
// that goroutine, never through the mailbox.
//
// Each side's end reason is recorded once, by the first thing that ends it. Stopping (by the
// owner, or after any of the above) closes both sockets, stops the timers and waits for the
// goroutines; Stopped logs one line and reports ConnectionEnded.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
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
	events  *actor.PID                          // hears ConnectionEnded (the engine's stats), besides the parent
	stopWhy *atomic.Pointer[messages.EndReason] // the owner's reason when it stops its children
	refusal error                               // connRefuse: the error to answer with

	// client
	proxyKind proxy.Kind
	proxyOpts proxy.Options // the proxy protocol's auth, handshake budget and header limit (from the tunnel's config)
	client    net.Conn
	dialer    netstack.Dialer

	// exit
	in      net.Conn // connect-service connection from the tunnel
	tcpFlow *netstack.TCPFlow
	udpFlow *netstack.UDPFlow
	egress  *netstack.EgressPolicy
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
	bytesIn  atomic.Int64 // in → out, as accepted by out
	bytesOut atomic.Int64 // out → in, as accepted by in
	pumps    int          // directions still running
	ending   bool         // graceful end under way
	closedUs bool         // we closed or reset both sockets: later I/O errors are our own doing
	refused  bool
	ping     bool               // a connect-protocol ping (a health probe): not a connection, not counted
	opened   bool               // ConnectionOpened was emitted
	idleT    *time.Timer        // next idle check; stopped in Stopping
	inWhy    messages.EndReason // set once
	outWhy   messages.EndReason // set once
	timers   []*time.Timer      // lifetime and grace; stopped in Stopping

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
type connAdmit struct{ pid *actor.PID }

// connAdmitted answers connAdmit: err refuses (the connection was evicted, or the tunnel is full).
type connAdmitted struct{ err error }
type connIdleCheck struct{}

// pingServed tells the parent a ping ended: it held a slot but is no connection.
type pingServed struct{}
type connLifetimeExpired struct{}
type connGraceExpired struct{}

type connEstablished struct {
	in, out  net.Conn
	inReader interface{ Read([]byte) (int, error) }
	target   string
	forward  *proxy.Session // plain HTTP: served by proxy.ServeForward instead of the copy loops
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
	return func() actor.Actor { return &connActor{cfg: cfg} }
}

func (c *connActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.system, c.self, c.parent, c.started = ctx.ActorSystem(), ctx.Self(), ctx.Parent(), time.Now()
		c.in = c.cfg.client
		if c.cfg.in != nil {
			c.in = c.cfg.in
		}
		if c.in != nil && c.in.RemoteAddr() != nil {
			c.source = c.in.RemoteAddr().String()
		}
		var setupCtx context.Context
		setupCtx, c.cancel = context.WithTimeout(context.Background(), c.cfg.limits.Setup)
		c.result = make(chan any, 1)
		c.wg.Add(1)
		go c.setup(setupCtx)
		if c.cfg.limits.MaxLifetime > 0 {
			c.after(c.cfg.limits.MaxLifetime, &connLifetimeExpired{})
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
	case *actor.Stopping:
		why := messages.EndTunnelClosed
		if c.cfg.stopWhy != nil {
			if r := c.cfg.stopWhy.Load(); r != nil {
				why = *r
			}
		}
		c.setBoth(why)
		for _, t := range c.timers {
			t.Stop()
		}
		if c.idleT != nil {
			c.idleT.Stop()
		}
		c.cancel()
		if c.pumps > 0 { // stopped while relaying: the owner is going away, no grace
			abort(c.in)
			abort(c.out)
		} else {
			closeQuietly(c.in)
			closeQuietly(c.out)
		}
		c.wg.Wait()
		select { // setup finished but its report was not handled: release what it opened
		case r := <-c.result:
			switch r := r.(type) {
			case *connEstablished:
				closeQuietly(r.in)
				closeQuietly(r.out)
			case *connSetupFailed:
				c.ping = r.ping
			}
		default:
		}
	case *actor.Stopped:
		c.report(ctx)
	}
}

// after arms a timer that sends msg to the actor; Stopping stops it.
func (c *connActor) after(d time.Duration, msg any) {
	system, self := c.system, c.self
	c.timers = append(c.timers, time.AfterFunc(d, func() { system.Root.Send(self, msg) }))
}

// setIn and setOut record a side's reason once.
func (c *connActor) setIn(r messages.EndReason) {
	if c.inWhy == "" {
		c.inWhy = r
	}
}

func (c *connActor) setOut(r messages.EndReason) {
	if c.outWhy == "" {
		c.outWhy = r
	}
}

// failIn and failOut record an I/O failure seen on a side. The one exception to "once": a side
// recorded "normal" (it finished sending) whose socket then fails (a write to it is reset) did not
// get everything delivered, so the failure replaces "normal".
func (c *connActor) failIn(r messages.EndReason) {
	if c.inWhy == "" || c.inWhy == messages.EndNormal {
		c.inWhy = r
	}
}

func (c *connActor) failOut(r messages.EndReason) {
	if c.outWhy == "" || c.outWhy == messages.EndNormal {
		c.outWhy = r
	}
}

func (c *connActor) setBoth(r messages.EndReason) { c.setIn(r); c.setOut(r) }

// adopt takes over setup's outcome.
func (c *connActor) adopt(ctx actor.Context, r any) {
	switch m := r.(type) {
	case *connEstablished:
		c.in, c.out, c.target = m.in, m.out, m.target
		c.cancel()
		if m.forward != nil {
			c.out = nil // the request loop owns its upstream connections
			c.serveForward(m.forward)
		} else {
			c.pumps = 2
			c.wg.Add(2)
			report := func(d *pumpDone) { c.system.Root.Send(c.self, d) }
			go func() {
				defer c.wg.Done()
				pump(c.out, m.inReader, &c.bytesIn, false, func(d *pumpDone) { d.toOut = true; report(d) })
			}()
			go func() { defer c.wg.Done(); pump(c.in, c.out, &c.bytesOut, false, report) }()
		}
		if c.cfg.limits.Idle > 0 {
			c.exemptIdle = c.cfg.limits.IdleExempt != nil && c.cfg.limits.IdleExempt(c.target)
			c.idleSince = time.Now()
			c.lastSegsIn, c.lastSegsOut, _, _ = segments(c.in)
			if !c.exemptIdle {
				c.armIdle()
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

// serveForward runs a plain-HTTP session's request loop in a goroutine the actor owns (counted in
// wg, cancelled through c.cancel: Stopping and an expired grace reset its upstream). It counts
// bytes into the connection's totals as they move and reports once, at the end.
func (c *connActor) serveForward(s *proxy.Session) {
	var loopCtx context.Context
	loopCtx, c.cancel = context.WithCancel(context.Background())
	c.pumps = 1
	c.wg.Add(1)
	system, self := c.system, c.self
	go func() {
		defer c.wg.Done()
		err := proxy.ServeForward(loopCtx, s, c.dialForward, &c.bytesIn, &c.bytesOut)
		system.Root.Send(self, &forwardDone{err: err})
	}()
}

// dialForward dials a later request's origin through the tunnel, bounded like the first dial.
func (c *connActor) dialForward(ctx context.Context, t proxy.Target) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.limits.Setup)
	defer cancel()
	return c.cfg.dialer.DialTCP(ctx, t.Host, t.Port)
}

// forwardEnded: the request loop is over. It has answered the client and closed its upstream;
// both sides end with the loop's reason unless the actor ended them first.
func (c *connActor) forwardEnded(ctx actor.Context, m *forwardDone) {
	c.pumps = 0
	if !c.ending && !c.closedUs {
		why := forwardReason(m.err)
		c.setBoth(why)
		if why == messages.EndAuthFailed {
			c.authFailed(m.err)
		}
	}
	c.closedUs = true
	closeQuietly(c.in)
	ctx.Stop(ctx.Self())
}

// forwardReason maps how a request loop ended to the connection's end reason.
func forwardReason(err error) messages.EndReason {
	switch {
	case err == nil:
		return messages.EndNormal
	case errors.Is(err, proxy.ErrAuth):
		return messages.EndAuthFailed
	case errors.Is(err, proxy.ErrHandshakeTimeout):
		return messages.EndHandshakeTimeout
	case errors.Is(err, proxy.ErrDial):
		return dialReason(proxy.ReplyCodeOf(err))
	case errors.Is(err, proxy.ErrBadRequest), errors.Is(err, proxy.ErrUnsupported):
		return messages.EndProtocolError
	}
	return classify(err)
}

// authFailed logs a failed proxy authentication (the tunnel counts them by end reason).
func (c *connActor) authFailed(err error) {
	c.cfg.logger.Warn("proxy authentication failed", "conn", c.cfg.id, "owner", c.cfg.owner,
		"source", c.source, "proxy", c.cfg.proxyKind.String(), "err", err)
}

// proxyOptions are the connection's proxy options, with OnRequest logging one line per plain-HTTP
// request (from the request loop's goroutine) before calling the configured one.
func (c *connActor) proxyOptions() proxy.Options {
	opts := c.cfg.proxyOpts
	next, logger, id, owner := opts.OnRequest, c.cfg.logger, c.cfg.id, c.cfg.owner
	opts.OnRequest = func(r proxy.RequestLog) {
		lvl := slog.LevelDebug
		if r.Err != nil {
			lvl = slog.LevelInfo
		}
		if !logger.Enabled(context.Background(), lvl) { // no allocation per request when not logged
			if next != nil {
				next(r)
			}
			return
		}
		attrs := []any{"conn", id, "owner", owner, "method", r.Method, "target", "", "status", r.Status,
			"bytes_in", r.BytesIn, "bytes_out", r.BytesOut, "duration", r.Duration.Round(time.Millisecond)}
		if r.Target.Host != "" {
			attrs[7] = r.Target.String()
		}
		if r.Err != nil {
			attrs = append(attrs, "err", r.Err)
		}
		logger.Log(context.Background(), lvl, "http request", attrs...)
		if next != nil {
			next(r)
		}
	}
	return opts
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
	for _, s := range []net.Conn{c.in, c.out} {
		if cw, ok := s.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			closeQuietly(s)
		}
	}
	c.after(c.cfg.limits.Grace, &connGraceExpired{})
}

func (c *connActor) idleInterval() time.Duration {
	return max(min(c.cfg.limits.Idle, c.cfg.limits.KeepaliveIdle)/4, 10*time.Millisecond)
}

// idleCheck runs on the idle timer and re-arms it.
func (c *connActor) idleCheck(ctx actor.Context) {
	if c.pumps == 0 || c.ending {
		return
	}
	now := time.Now()
	total := c.bytesIn.Load() + c.bytesOut.Load()
	in, out, quiet, ok := segments(c.in)
	switch {
	case total != c.lastTotal:
		c.lastTotal, c.idleSince = total, now
	case ok && quiet && in != c.lastSegsIn && out != c.lastSegsOut:
		// Segments came and went with no bytes while nothing was queued either way: the kernel
		// answered keep-alive probes. (A delayed ACK moves only the received count; zero-window
		// probes and retransmissions happen only with data queued, which quiet rules out.)
		c.keepalive = true
	}
	c.lastSegsIn, c.lastSegsOut = in, out
	limit := c.cfg.limits.Idle
	if c.keepalive && c.cfg.limits.KeepaliveIdle > limit {
		limit = c.cfg.limits.KeepaliveIdle
	}
	if now.Sub(c.idleSince) >= limit {
		c.endGracefully(ctx, messages.EndInactivity)
		return
	}
	c.armIdle()
}

// armIdle schedules the next idle check on the actor's own timer (protoactor's ReceiveTimeout is
// racy at the pinned commit: asynkron/protoactor-go#1139).
func (c *connActor) armIdle() {
	system, self := c.system, c.self
	c.idleT = time.AfterFunc(c.idleInterval(), func() { system.Root.Send(self, &connIdleCheck{}) })
}

func (c *connActor) emitOpened(ctx actor.Context) {
	if !c.opened {
		c.opened = true
		emit(ctx, c.cfg.events, &messages.ConnectionOpened{Owner: c.cfg.owner, Role: c.cfg.role, ID: c.cfg.id})
	}
}

func (c *connActor) report(ctx actor.Context) {
	if c.ping {
		ctx.Request(ctx.Parent(), &pingServed{})
		return
	}
	c.emitOpened(ctx) // stopped during setup: it was a connection all the same
	ev := &messages.ConnectionEnded{Owner: c.cfg.owner, Role: c.cfg.role, ID: c.cfg.id, Source: c.source,
		Target: c.target, Duration: time.Since(c.started), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		Incoming: c.inWhy, Outgoing: c.outWhy, Refused: c.refused, Keepalive: c.keepalive}
	lvl := slog.LevelDebug
	if ev.Incoming != messages.EndNormal || ev.Outgoing != messages.EndNormal {
		lvl = slog.LevelInfo
	}
	c.cfg.logger.Log(context.Background(), lvl, "connection ended", "conn", ev.ID, "role", ev.Role, "owner", ev.Owner,
		"source", ev.Source, "target", ev.Target, "duration", ev.Duration.Round(time.Millisecond),
		"bytes_in", ev.BytesIn, "bytes_out", ev.BytesOut, "incoming", ev.Incoming, "outgoing", ev.Outgoing,
		"keepalive", ev.Keepalive)
	ctx.Request(ctx.Parent(), ev) // Request, not Send: the parent keys its bookkeeping by sender
	emit(ctx, c.cfg.events, ev)
}

// setup runs the handshake and dial in its own goroutine and leaves one connEstablished or
// connSetupFailed in c.result. Sockets it opens belong to the actor from then on: adopted on
// connSetupDone, or released in Stopping if the actor stops first.
func (c *connActor) setup(ctx context.Context) {
	defer c.wg.Done()
	msg := c.setupRecovered(ctx)
	if _, ok := msg.(*connSetupFailed); ok && c.cfg.client != nil {
		// The refusal reply is written; closing with the client's request still unread would send a
		// reset that can overtake it. Half-close, discard what is left for a moment, then close.
		lingerClose(c.cfg.client, 500*time.Millisecond)
	}
	c.result <- msg
	c.system.Root.Send(c.self, &connSetupDone{})
}

// setupRecovered runs the setup, which parses untrusted input (a proxy client's handshake, a
// tunnel client's connect request): a panic there is logged with its stack and ends this
// connection with internal_error; the process and every other connection go on.
func (c *connActor) setupRecovered(ctx context.Context) (msg any) {
	defer func() {
		if r := recover(); r != nil {
			c.cfg.logger.Error("connection setup panicked", "conn", c.cfg.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			msg = &connSetupFailed{reason: messages.EndInternalError, err: fmt.Errorf("internal error: %v", r)}
		}
	}()
	switch c.cfg.kind {
	case connProxy:
		msg = c.setupProxy(ctx)
	case connRefuse:
		err := proxy.RefuseWith(ctx, c.cfg.proxyKind, c.cfg.client, c.cfg.refusal, c.cfg.proxyOpts)
		reason := messages.EndLimit
		if r, ok := c.cfg.refusal.(interface{ EndReason() messages.EndReason }); ok {
			reason = r.EndReason()
		}
		if errors.Is(err, proxy.ErrAuth) {
			reason = messages.EndAuthFailed
			c.authFailed(err)
		}
		msg = &connSetupFailed{reason: reason, err: c.cfg.refusal}
	case connService:
		msg = c.setupService(ctx)
	case connFlowTCP, connFlowUDP:
		msg = c.setupFlow(ctx)
	}
	return msg
}

// admit asks the parent to establish this connection, whose handshake is done (the client said
// where it goes and authenticated). Runs on the setup goroutine; bounded by ctx and 5 s.
func (c *connActor) admit(ctx context.Context) error {
	if c.parent == nil {
		return nil
	}
	limit := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, max(time.Until(dl), time.Millisecond))
	}
	res, err := c.system.Root.RequestFuture(c.parent, &connAdmit{pid: c.self}, limit).Result()
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	if a, ok := res.(*connAdmitted); ok && a.err != nil {
		return a.err
	}
	return nil
}

func (c *connActor) setupProxy(ctx context.Context) any {
	var target string
	dial := func(ctx context.Context, t proxy.Target) (net.Conn, error) {
		target = t.String()
		if err := c.admit(ctx); err != nil {
			return nil, err
		}
		return c.cfg.dialer.DialTCP(ctx, t.Host, t.Port)
	}
	sess, err := proxy.HandshakeWith(ctx, c.cfg.proxyKind, c.cfg.client, dial, c.proxyOptions())
	if err != nil {
		reason := messages.EndProtocolError
		var own interface{ EndReason() messages.EndReason }
		switch {
		case errors.As(err, &own):
			reason = own.EndReason()
		case errors.Is(err, proxy.ErrAuth):
			reason = messages.EndAuthFailed
			c.authFailed(err)
		case errors.Is(err, proxy.ErrHandshakeTimeout):
			reason = messages.EndHandshakeTimeout
		case target != "":
			reason = dialReason(proxy.ReplyCodeOf(err))
		case classify(err) == messages.EndTimeout:
			reason = messages.EndTimeout
		case classify(err) != messages.EndError:
			reason = classify(err)
		}
		return &connSetupFailed{reason: reason, target: target, err: err}
	}
	est := &connEstablished{in: c.cfg.client, out: sess.Upstream, inReader: sess.Client, target: sess.Target.String()}
	if sess.Forward {
		est.forward = sess
	}
	return est
}

func (c *connActor) setupService(ctx context.Context) any {
	in := c.cfg.in
	if dl, ok := ctx.Deadline(); ok {
		_ = in.SetReadDeadline(dl)
	}
	req, err := netstack.ReadConnectRequest(in)
	_ = in.SetReadDeadline(time.Time{})
	if err != nil {
		return &connSetupFailed{reason: messages.EndProtocolError, err: err}
	}
	target := net.JoinHostPort(req.Host, itoa(req.Port))
	if req.Cmd == netstack.ConnectCmdPing {
		_ = netstack.WriteConnectReply(in, messages.ReplySucceeded)
		return &connSetupFailed{reason: messages.EndNormal, target: "ping", ping: true}
	}
	out, err := c.cfg.egress.DialEgress(ctx, "tcp", req.Host, req.Port, c.cfg.limits.Setup)
	code := netstack.ReplyCodeForDial(err)
	if werr := netstack.WriteConnectReply(in, code); werr != nil && err == nil {
		closeQuietly(out)
		return &connSetupFailed{reason: classify(werr), target: target, err: werr}
	}
	if err != nil {
		return &connSetupFailed{reason: dialReason(code), target: target, err: err}
	}
	return &connEstablished{in: in, out: out, inReader: in, target: target}
}

func (c *connActor) setupFlow(ctx context.Context) any {
	var dst netip.AddrPort
	network := "tcp"
	if c.cfg.kind == connFlowUDP {
		dst, network = c.cfg.udpFlow.Dst, "udp"
	} else {
		dst = c.cfg.tcpFlow.Dst
	}
	target := dst.String()
	out, err := c.cfg.egress.DialEgress(ctx, network, dst.Addr().String(), dst.Port(), c.cfg.limits.Setup)
	if err != nil {
		if c.cfg.kind == connFlowUDP {
			c.cfg.udpFlow.Reject()
		} else {
			c.cfg.tcpFlow.Reject()
		}
		return &connSetupFailed{reason: dialReason(netstack.ReplyCodeForDial(err)), target: target, err: err}
	}
	var in net.Conn
	if c.cfg.kind == connFlowUDP {
		in, err = c.cfg.udpFlow.Accept()
	} else {
		in, err = c.cfg.tcpFlow.AcceptContext(ctx)
	}
	if err != nil {
		closeQuietly(out)
		return &connSetupFailed{reason: classify(err), target: target, err: err}
	}
	return &connEstablished{in: in, out: out, inReader: in, target: target}
}

func dialReason(code messages.ReplyCode) messages.EndReason {
	switch code {
	case messages.ReplyNotAllowed:
		return messages.EndPolicyDenied
	case messages.ReplyTTLExpired:
		return messages.EndTimeout
	}
	return messages.EndDialFailed
}
