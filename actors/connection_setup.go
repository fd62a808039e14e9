package actors

// A connection actor's setup: the goroutine that runs the proxy handshake (or the exit's connect
// request, or a forwarded flow's dial) and leaves its outcome for the actor, recovering from
// panics on untrusted input; and the tunnel's admission of a proxy connection whose handshake is done.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/proxy"
)

// setup runs the handshake and dial in its own goroutine and leaves one connEstablished or
// connSetupFailed in c.result. Sockets it opens belong to the actor from then on: adopted on
// connSetupDone, or released in Stopping if the actor stops first.
func (c *connActor) setup(ctx context.Context) {
	defer c.wg.Done()
	msg := c.setupRecovered(ctx)
	if _, ok := msg.(*connSetupFailed); ok && c.cfg.client != nil {
		// The refusal reply is written; closing with the client's request still unread would send a
		// reset that can overtake it. Half-close, discard what is left for a moment, then close.
		lingerClose(c.cfg.client, refusalLinger)
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
		opts := c.cfg.proxyOpts
		if c.cfg.proxyKind == proxy.SOCKS5 && !c.cfg.udp.Disabled {
			opts.Associate = func(context.Context) error { return nil } // refused with the same reply
		}
		err := proxy.RefuseWith(ctx, c.cfg.proxyKind, c.cfg.client, c.cfg.refusal, opts)
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
// where it goes, target, and authenticated). Runs on the setup goroutine; bounded by ctx and 5 s.
func (c *connActor) admit(ctx context.Context, target string) error {
	return c.admitAs(ctx, target, false)
}

// parentWait bounds a setup goroutine's request to its parent: admitWait, or less when the
// setup's own deadline is nearer.
func parentWait(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(admitWait, max(time.Until(dl), minWait))
	}
	return admitWait
}

// admitAs is admit for a connection or (udp) a UDP association, which max_associations bounds too.
func (c *connActor) admitAs(ctx context.Context, target string, udp bool) error {
	if c.parent == nil {
		return nil
	}
	res, err := c.system.Root.RequestFuture(c.parent, &connAdmit{pid: c.self, target: target, udp: udp}, parentWait(ctx)).Result()
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
		if err := c.admit(ctx, target); err != nil {
			return nil, err
		}
		return c.cfg.dialer.DialTCP(ctx, t.Host, t.Port)
	}
	opts := c.proxyOptions()
	var assoc *netstack.UDPAssociation
	defer func() { // a panic in the handshake after the association opened must not leak it
		if r := recover(); r != nil {
			if assoc != nil {
				_ = assoc.Close()
			}
			panic(r) // setupRecovered reports it
		}
	}()
	if c.cfg.proxyKind == proxy.SOCKS5 && !c.cfg.udp.Disabled {
		opts.Associate = func(ctx context.Context) error {
			target = "udp"
			return c.associate(ctx, &assoc)
		}
	}
	sess, err := proxy.HandshakeWith(ctx, c.cfg.proxyKind, c.cfg.client, dial, opts)
	if err != nil && assoc != nil { // opened, then the reply failed
		_ = assoc.Close()
	}
	if err == nil && sess.UDP != nil {
		return &connEstablished{in: c.cfg.client, out: assoc.Control, target: "udp",
			udp: &udpParts{sess: sess.UDP, assoc: assoc}}
	}
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
	if c.cfg.overLimit && req.Cmd != netstack.ConnectCmdRefusal { // closed unanswered, as the limit always did
		return &connSetupFailed{reason: messages.EndLimit, target: target, err: errSessionFull}
	}
	if req.Cmd == netstack.ConnectCmdUDP {
		return c.setupExitUDP(in, req.Port)
	}
	if req.Cmd == netstack.ConnectCmdPing {
		_ = netstack.WriteConnectReply(in, messages.ReplySucceeded)
		return &connSetupFailed{reason: messages.EndNormal, target: "ping", ping: true}
	}
	if req.Cmd == netstack.ConnectCmdRefusal { // like a ping, no connection: an answer from the peer's memory
		_ = netstack.WriteConnectReply(in, c.refusalOf(ctx, req))
		return &connSetupFailed{reason: messages.EndNormal, target: "refusal", ping: true}
	}
	host := req.Host
	if a, err := netip.ParseAddr(host); err == nil && c.ownAddress(a) {
		host = netstack.LoopbackOf(a).String() // the exit's own tunnel address is the exit host (setupFlow)
	}
	out, err := c.cfg.egress.DialEgress(ctx, "tcp", host, req.Port, c.cfg.limits.Setup)
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
	if c.ownAddress(dst.Addr()) {
		// The exit's own tunnel address is the exit host, as a WireGuard server's address is: its
		// flows go to the host's loopback (when the egress policy allows loopback). A standard
		// client cannot use 127.0.0.1 through a tunnel: its stack drops replies from a loopback
		// source (a martian), as Linux and gVisor do.
		dst = netip.AddrPortFrom(netstack.LoopbackOf(dst.Addr()), dst.Port())
	}
	target := dst.String()
	out, err := c.cfg.egress.DialEgress(ctx, network, dst.Addr().String(), dst.Port(), c.cfg.limits.Setup)
	if err != nil {
		code := netstack.ReplyCodeForDial(err)
		if c.cfg.kind == connFlowUDP {
			c.cfg.udpFlow.Reject()
		} else {
			// The peer hears why before the reset goes out, so it can answer the client's query.
			f := c.cfg.tcpFlow
			c.system.Root.Send(c.parent, &flowRefused{flow: keyOf(f.Src.Port(), f.Dst), code: code})
			c.cfg.tcpFlow.Reject()
		}
		return &connSetupFailed{reason: dialReason(code), target: target, err: err}
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

// errSessionFull: a connect request over the session's max_connections_per_session.
var errSessionFull = errors.New("the session's connection limit is reached")

// refusalOf asks the peer why it refused the flow the query names (netstack.ConnectCmdRefusal);
// general failure when the peer cannot say in time.
func (c *connActor) refusalOf(ctx context.Context, req netstack.ConnectRequest) messages.ReplyCode {
	a, err := netip.ParseAddr(req.Host) // ReadConnectRequest checked it
	if err != nil || c.parent == nil {
		return messages.ReplyGeneralFailure
	}
	q := &refusalQuery{flow: keyOf(req.From, netip.AddrPortFrom(a, req.Port))}
	res, err := c.system.Root.RequestFuture(c.parent, q, parentWait(ctx)).Result()
	if r, ok := res.(*refusalAnswer); ok && err == nil {
		return r.code
	}
	return messages.ReplyGeneralFailure
}

// ownAddress reports whether a is one of the exit's own tunnel addresses.
func (c *connActor) ownAddress(a netip.Addr) bool { return c.cfg.stack != nil && c.cfg.stack.Owns(a) }

func dialReason(code messages.ReplyCode) messages.EndReason {
	switch code {
	case messages.ReplyNotAllowed:
		return messages.EndPolicyDenied
	case messages.ReplyTTLExpired:
		return messages.EndTimeout
	}
	return messages.EndDialFailed
}
