package actors

// The connection actor owns one proxied connection (client) or forwarded flow (exit): both of its
// sockets and the goroutines that move its bytes. Bytes never pass through a mailbox; the actor hears
// only of setup, each direction's end, idle checks, and the end.
//
//	Started ──setup ok──▶ relaying ──both directions done──▶ stop
//	   │                     │ one direction failed, idle, stopped by owner
//	   └──setup failed───────┴──────────────────────────────▶ stop
//
// Stopping closes both sockets, which ends the goroutines, then waits for them; the end is logged once.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
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
	connService                     // exit: a connect-service request from a client
	connFlowTCP                     // exit: a TCP flow to any destination (e.g. a static peer's)
	connFlowUDP                     // exit: a UDP flow
)

// End reasons (issue #3 grows this into the full documented set).
const (
	reasonNormal      = "normal"
	reasonReset       = "reset"
	reasonError       = "error"
	reasonDialFailed  = "dial_failed"
	reasonPolicy      = "policy_denied"
	reasonHandshake   = "handshake_failed"
	reasonInactivity  = "inactivity"
	reasonStopped     = "tunnel_closed"
	reasonBadProtocol = "bad_request"
)

type connConfig struct {
	kind      connKind
	id        uint64
	owner     string // tunnel id or session id, for the log line
	logger    *slog.Logger
	setupTime time.Duration // bound on handshake and dial
	idle      time.Duration // ends the connection after this long without bytes (0: never)

	// client
	proxyKind proxy.Kind
	client    net.Conn
	dialer    netstack.Dialer

	// exit
	in      net.Conn // connect-service connection from the tunnel
	tcpFlow *netstack.TCPFlow
	udpFlow *netstack.UDPFlow
	egress  *netstack.EgressPolicy
}

type connActor struct {
	cfg       connConfig
	system    *actor.ActorSystem
	self      *actor.PID
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	in, out   net.Conn // alive until Stopping; in faces the client/tunnel, out the destination/tunnel
	target    string
	started   time.Time
	bytesIn   atomic.Int64 // in → out
	bytesOut  atomic.Int64 // out → in
	lastTotal int64
	idleSince time.Time
	done      int      // directions finished
	result    chan any // setup's outcome; buffered 1, so setup never blocks and Stopping can reclaim it
	reason    string
	err       error
}

type connEstablished struct {
	in, out            net.Conn
	inReader           io.Reader
	target             string
	closeAfterResponse bool
}

type connSetupFailed struct {
	reason string
	target string
	err    error
}

type connSetupDone struct{}

type connDirectionDone struct {
	toOut  bool // in → out finished
	err    error
	endAll bool // this direction's end ends the connection (no half-close possible)
}

func newConnActor(cfg connConfig) actor.Producer {
	return func() actor.Actor { return &connActor{cfg: cfg} }
}

func (c *connActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.system, c.self, c.started = ctx.ActorSystem(), ctx.Self(), time.Now()
		c.in = c.cfg.client
		if c.cfg.in != nil {
			c.in = c.cfg.in
		}
		var setupCtx context.Context
		setupCtx, c.cancel = context.WithTimeout(context.Background(), c.cfg.setupTime)
		c.result = make(chan any, 1)
		c.wg.Add(1)
		go c.setup(setupCtx)
	case *connSetupDone:
		c.adopt(ctx, <-c.result)
	case *connDirectionDone:
		c.done++
		switch {
		case m.err != nil:
			c.end(ctx, classify(m.err), m.err)
		case m.endAll || c.done == 2:
			c.end(ctx, reasonNormal, nil)
		}
	case *actor.ReceiveTimeout:
		total := c.bytesIn.Load() + c.bytesOut.Load()
		if total != c.lastTotal {
			c.lastTotal, c.idleSince = total, time.Now()
		} else if time.Since(c.idleSince) >= c.cfg.idle {
			c.end(ctx, reasonInactivity, nil)
			return
		}
		ctx.SetReceiveTimeout(c.cfg.idle / 4) // fires once; re-arm
	case *actor.Stopping:
		if c.reason == "" {
			c.reason = reasonStopped
		}
		if c.cancel != nil {
			c.cancel()
		}
		closeQuietly(c.in)
		closeQuietly(c.out)
		c.wg.Wait()
		select { // setup finished but its report was not handled: release what it opened
		case r := <-c.result:
			if est, ok := r.(*connEstablished); ok {
				closeQuietly(est.in)
				closeQuietly(est.out)
			}
		default:
		}
	case *actor.Stopped:
		c.logEnd()
	}
}

// adopt takes over setup's outcome.
func (c *connActor) adopt(ctx actor.Context, r any) {
	switch m := r.(type) {
	case *connEstablished:
		c.in, c.out, c.target = m.in, m.out, m.target
		c.cancel()
		c.wg.Add(2)
		go c.pump(c.out, m.inReader, true, false)
		go c.pump(c.in, c.out, false, m.closeAfterResponse)
		if c.cfg.idle > 0 {
			c.idleSince = time.Now()
			ctx.SetReceiveTimeout(c.cfg.idle / 4)
		}
	case *connSetupFailed:
		c.target = m.target
		c.end(ctx, m.reason, m.err)
	}
}

func (c *connActor) logEnd() {
	lvl := slog.LevelDebug
	if c.reason != reasonNormal {
		lvl = slog.LevelInfo
	}
	attrs := []any{"conn", c.cfg.id, "owner", c.cfg.owner, "target", c.target,
		"duration", time.Since(c.started).Round(time.Millisecond), "bytes_in", c.bytesIn.Load(),
		"bytes_out", c.bytesOut.Load(), "reason", c.reason}
	if c.in != nil {
		if a := c.in.RemoteAddr(); a != nil {
			attrs = append(attrs, "source", a.String())
		}
	}
	if c.err != nil {
		attrs = append(attrs, "err", c.err.Error())
	}
	c.cfg.logger.Log(context.Background(), lvl, "connection ended", attrs...)
}

// end records the reason (once) and stops the actor.
func (c *connActor) end(ctx actor.Context, reason string, err error) {
	if c.reason != "" {
		return
	}
	c.reason, c.err = reason, err
	ctx.Stop(ctx.Self())
}

func (c *connActor) send(msg any) { c.system.Root.Send(c.self, msg) }

// setup runs the handshake and dial in its own goroutine and leaves one connEstablished or
// connSetupFailed in c.result. Sockets it opens belong to the actor from then on: adopted on
// connSetupDone, or released in Stopping if the actor stops first.
func (c *connActor) setup(ctx context.Context) {
	defer c.wg.Done()
	var msg any
	switch c.cfg.kind {
	case connProxy:
		msg = c.setupProxy(ctx)
	case connService:
		msg = c.setupService(ctx)
	case connFlowTCP, connFlowUDP:
		msg = c.setupFlow(ctx)
	}
	c.result <- msg
	c.send(&connSetupDone{})
}

func (c *connActor) setupProxy(ctx context.Context) any {
	var target string
	dial := func(ctx context.Context, t proxy.Target) (net.Conn, error) {
		target = t.String()
		return c.cfg.dialer.DialTCP(ctx, t.Host, t.Port)
	}
	sess, err := proxy.Handshake(ctx, c.cfg.proxyKind, c.cfg.client, dial)
	if err != nil {
		reason := reasonHandshake
		if target != "" {
			reason = reasonDialFailed
			if proxy.ReplyCodeOf(err) == messages.ReplyNotAllowed {
				reason = reasonPolicy
			}
		}
		return &connSetupFailed{reason: reason, target: target, err: err}
	}
	return &connEstablished{in: c.cfg.client, out: sess.Upstream, inReader: sess.Client,
		target: sess.Target.String(), closeAfterResponse: sess.CloseAfterResponse}
}

func (c *connActor) setupService(ctx context.Context) any {
	in := c.cfg.in
	if dl, ok := ctx.Deadline(); ok {
		_ = in.SetReadDeadline(dl)
	}
	req, err := netstack.ReadConnectRequest(in)
	_ = in.SetReadDeadline(time.Time{})
	if err != nil {
		return &connSetupFailed{reason: reasonBadProtocol, err: err}
	}
	target := net.JoinHostPort(req.Host, itoa(req.Port))
	if req.Cmd == netstack.ConnectCmdPing {
		_ = netstack.WriteConnectReply(in, messages.ReplySucceeded)
		return &connSetupFailed{reason: reasonNormal, target: "ping"}
	}
	out, err := c.cfg.egress.DialEgress(ctx, "tcp", req.Host, req.Port, c.cfg.setupTime)
	code := netstack.ReplyCodeForDial(err)
	if werr := netstack.WriteConnectReply(in, code); werr != nil && err == nil {
		closeQuietly(out)
		return &connSetupFailed{reason: reasonError, target: target, err: werr}
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
	out, err := c.cfg.egress.DialEgress(ctx, network, dst.Addr().String(), dst.Port(), c.cfg.setupTime)
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
		return &connSetupFailed{reason: reasonError, target: target, err: err}
	}
	return &connEstablished{in: in, out: out, inReader: in, target: target}
}

func dialReason(code messages.ReplyCode) string {
	if code == messages.ReplyNotAllowed {
		return reasonPolicy
	}
	return reasonDialFailed
}

type closeWriter interface{ CloseWrite() error }

// pump copies src to dst with a pooled buffer until EOF or error. On EOF it half-closes dst so the
// other side sees the end of this direction while the opposite direction goes on.
func (c *connActor) pump(dst net.Conn, src io.Reader, toOut, closeAll bool) {
	defer c.wg.Done()
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	buf := *bufp
	counter := &c.bytesOut
	if toOut {
		counter = &c.bytesIn
	}
	var err error
	for {
		nr, er := src.Read(buf)
		if nr > 0 {
			nw, ew := dst.Write(buf[:nr])
			counter.Add(int64(nw))
			if ew != nil {
				err = ew
				break
			}
		}
		if er != nil {
			if er != io.EOF {
				err = er
			}
			break
		}
	}
	endAll := false
	if err == nil {
		if cw, ok := dst.(closeWriter); ok && !closeAll {
			_ = cw.CloseWrite()
		} else {
			endAll = true // no half-close (UDP), or one request per connection
		}
	}
	c.send(&connDirectionDone{toOut: toOut, err: err, endAll: endAll})
}

// bufPool holds relay buffers: big enough for any UDP datagram, so one pool serves both protocols.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func classify(err error) string {
	switch {
	case errors.Is(err, net.ErrClosed):
		return reasonStopped
	case isReset(err):
		return reasonReset
	}
	return reasonError
}

func closeQuietly(c net.Conn) {
	if c != nil {
		_ = c.Close()
	}
}
