package netstack

// Direct flows to a Warren exit: a destination given as an IP address is dialled straight through
// the stack, as a standard WireGuard server's clients do, and the exit's stack takes the flow, dials
// the destination, and only then completes the handshake (netstack/flow.go). That is the
// handshake's three segments instead of the connect service's seven (its handshake, request,
// reply, and the ACK of each), and one round trip through the tunnel less per connection.
//
// An exit that cannot reach the destination resets the SYN. A reset says only "refused", so the
// client asks the exit's connect service why (ConnectCmdRefusal): the exit remembers the code of
// each flow it refused for a while (actors/peer_refusals.go) and replies with it. The exit dials
// once either way; the exact code (not allowed, host unreachable, TTL expired …) reaches the proxy
// client as it does through the connect service. An exit that cannot answer closes the query
// unanswered (over its session limit, stopping, or older than the command): the client then
// reports general failure, as a connect request closed unanswered always read.
//
// Names still go through the connect service, so that they resolve on the exit and never on the
// client's network, and so do the destinations the exit alone can judge: its loopback beyond
// 127.0.0.1 and ::1 (and those two when the exit has no tunnel address of their family),
// unspecified, multicast and broadcast addresses, the client's own, addresses of a family the
// client's stack has no address of, and the connect service's own address and port.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/warren-tunnel/warren/messages"
)

// ConnectCmdRefusal asks the exit why it reset a direct flow: host is the flow's destination
// address (an IP literal) and port its port, and the request goes on with the flow's source port
// (2 bytes, big endian; ConnectRequest.From), so that of several flows to one destination each
// learns its own reason. The reply's code is the exit's reason, and the exit closes;
// ReplyConnectionRefused when it refused no such flow lately.
const ConnectCmdRefusal = 4

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// directTo reports whether a connection to host:port goes as a direct flow, and to where: 127.0.0.1
// and ::1 are the exit's host, which its own tunnel address stands for on the exit.
func (d Dialer) directTo(host string, port uint16) (netip.AddrPort, bool) {
	if !d.Direct || d.Stack == nil || port == 0 {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, false // a name: the exit resolves it
	}
	a = a.Unmap()
	if a == LoopbackOf(a) {
		if a = d.exitAddr(a.Is4()); !a.IsValid() {
			return netip.AddrPort{}, false
		}
	}
	switch {
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a == broadcast4, d.Stack.Owns(a):
		return netip.AddrPort{}, false
	case a.Is4() && !d.Stack.has4(), a.Is6() && !d.Stack.has6():
		return netip.AddrPort{}, false // the stack has no route of that family: the exit dials it
	case port == d.Service.Port() && (a == d.Service.Addr() || slices.Contains(d.Exit, a)):
		return netip.AddrPort{}, false // the connect service itself listens there
	}
	return netip.AddrPortFrom(a, port), true
}

// exitAddr is the exit's tunnel address of the family asked for, if it has one.
func (d Dialer) exitAddr(v4 bool) netip.Addr {
	if a := d.Service.Addr().Unmap(); a.IsValid() && a.Is4() == v4 {
		return a
	}
	for _, a := range d.Exit {
		if a = a.Unmap(); a.IsValid() && a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// LoopbackOf is the loopback address of a's family (127.0.0.1 or ::1): what an exit's own tunnel
// address stands for.
func LoopbackOf(a netip.Addr) netip.Addr {
	if a.Unmap().Is4() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.IPv6Loopback()
}

// dialDirect opens a direct flow to dst; a reset is asked about (ConnectCmdRefusal).
func (d Dialer) dialDirect(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	c, local, err := d.Stack.dialTCP(ctx, fa, proto)
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() != nil:
		return nil, &DialError{Code: ReplyCodeForDial(ctx.Err()), Err: fmt.Errorf("%w: %w", ctx.Err(), err)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, &DialError{Code: d.refusal(ctx, dst, local), Err: fmt.Errorf("the exit refused the flow: %w", err)}
	}
	return nil, &DialError{Code: ReplyCodeForDial(err), Err: err}
}

// refusal asks the exit why it refused the flow from local (the client's port) to dst. Its code;
// connection refused when it answers that it refused no such flow lately; general failure when it
// closes the query unanswered (it is over its session limit or stopping, or older than the query),
// as a connect request closed unanswered reads.
func (d Dialer) refusal(ctx context.Context, dst netip.AddrPort, local uint16) messages.ReplyCode {
	c, err := d.exchange(ctx, ConnectRequest{Cmd: ConnectCmdRefusal, Host: dst.Addr().String(), Port: dst.Port(), From: local})
	if c != nil { // "succeeded": not a refusal the exit knows of
		_ = c.Close()
		return messages.ReplyConnectionRefused
	}
	var de *DialError
	switch {
	case ctx.Err() != nil:
		return ReplyCodeForDial(ctx.Err())
	case errors.As(err, &de) && de.Err == nil: // a code other than succeeded, from the exit
		return de.Code
	}
	return messages.ReplyGeneralFailure
}
