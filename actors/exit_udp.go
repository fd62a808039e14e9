package actors

// The exit's half of a SOCKS5 UDP association: datagrams from the client's tunnel socket go to
// their destinations from one host socket, under the egress policy (checked on the address sent
// to, names resolved here), and replies from those destinations come back with a header naming
// their source. Owned by the connection actor (connection_udp.go): its two loops are the actor's
// goroutines; its sockets close in the actor's closeUDP or Stopping.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/proxy"
)

// resolveLimit bounds one name's resolution (the association's datagrams wait meanwhile).
const resolveLimit = 5 * time.Second

// exitUDP is the exit half's state shared by its two loops.
type exitUDP struct {
	sock    *netstack.UDPSocket // connected to the client's tunnel socket
	host    *net.UDPConn
	control net.Conn // notices to the client
	egress  *netstack.EgressPolicy
	max     int // destinations; 0 unlimited
	resolve time.Duration
	// ctx ends when the association does (cancel, from udpParts.close): a name being resolved
	// does not hold up the actor's Stopping.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards sent, which both loops use: toDestinations adds, fromDestinations looks up.
	mu   sync.RWMutex
	sent map[netip.AddrPort]struct{}

	// used only by toDestinations
	names   map[string]nameResult                  // names resolved so far (bounded by max, like sent)
	denied  map[netip.AddrPort]messages.DropReason // destinations refused so far (at most maxRefused)
	notices int                                    // notices sent (at most maxRefused)
	// overNames: names refused for the destination limit (at most maxRefused): one notice each
	overNames map[string]struct{}
}

// maxRefused bounds what an association remembers of refused destinations: the client is told of
// the first ones, and a denied address is judged again after that (it stays denied).
const maxRefused = 256

type nameResult struct {
	addr netip.Addr
	drop messages.DropReason // "" when resolved and allowed
}

func newExitUDP(sock *netstack.UDPSocket, host *net.UDPConn, control net.Conn, egress *netstack.EgressPolicy, maxDests int, resolve time.Duration) *exitUDP {
	ctx, cancel := context.WithCancel(context.Background())
	return &exitUDP{sock: sock, host: host, control: control, egress: egress, max: maxDests, ctx: ctx, cancel: cancel,
		resolve: min(resolve, resolveLimit), sent: map[netip.AddrPort]struct{}{},
		names: map[string]nameResult{}, denied: map[netip.AddrPort]messages.DropReason{},
		overNames: map[string]struct{}{}}
}

// toDestinations sends the client's datagrams on until the tunnel socket closes.
func (x *exitUDP) toDestinations(c proxy.UDPCounter) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := x.sock.Read(buf)
		if errors.Is(err, syscall.ECONNREFUSED) { // an ICMP error from the client's side: not the end
			continue
		}
		if err != nil {
			return err
		}
		h, err := proxy.ParseUDPHeader(buf[:n])
		if err != nil || h.Frag != 0 {
			c.Drop(messages.DropMalformed)
			continue
		}
		dst, drop, news := x.destination(h)
		if drop != "" {
			c.Drop(drop)
			if news {
				x.notice(h, drop)
			}
			continue
		}
		if _, err := x.host.WriteToUDPAddrPort(buf[h.Len:n], dst); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			c.Drop(messages.DropSendFailed)
			continue
		}
		c.In(n - h.Len)
	}
}

// destination resolves and judges a datagram's destination: the address to send to, or why not,
// and whether that refusal is news (decided now, not remembered from an earlier datagram).
func (x *exitUDP) destination(h proxy.UDPHeader) (netip.AddrPort, messages.DropReason, bool) {
	addr := h.Addr
	if h.Domain != nil {
		r, ok := x.names[string(h.Domain)]
		if !ok {
			if x.max > 0 && len(x.names) >= x.max {
				_, told := x.overNames[string(h.Domain)]
				if !told && len(x.overNames) < maxRefused {
					x.overNames[string(h.Domain)] = struct{}{}
				}
				return netip.AddrPort{}, messages.DropLimit, !told
			}
			r = x.lookup(string(h.Domain))
			x.names[string(h.Domain)] = r
			if r.drop != "" {
				return netip.AddrPort{}, r.drop, true
			}
		}
		if r.drop != "" {
			return netip.AddrPort{}, r.drop, false
		}
		addr = r.addr
	}
	dst := netip.AddrPortFrom(addr.Unmap(), h.Port)
	x.mu.RLock()
	_, known := x.sent[dst]
	n := len(x.sent)
	x.mu.RUnlock()
	if known {
		return dst, "", false
	}
	if why, ok := x.denied[dst]; ok {
		return netip.AddrPort{}, why, false
	}
	why := messages.DropReason("")
	switch {
	case x.egress.Check(dst.Addr()) != nil:
		why = messages.DropPolicyDenied
	case x.max > 0 && n >= x.max:
		why = messages.DropLimit
	}
	if why != "" {
		if len(x.denied) < maxRefused {
			x.denied[dst] = why
		}
		return netip.AddrPort{}, why, true
	}
	x.mu.Lock()
	x.sent[dst] = struct{}{}
	x.mu.Unlock()
	return dst, "", false
}

// lookup resolves a name on the exit, bounded, and checks its address against the policy.
func (x *exitUDP) lookup(name string) nameResult {
	ctx, cancel := context.WithTimeout(x.ctx, x.resolve)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil || len(addrs) == 0 {
		return nameResult{drop: messages.DropUnresolvable}
	}
	// The first address the policy allows, IPv4 first (the host socket may lack IPv6 routes).
	var denied bool
	for _, want4 := range []bool{true, false} {
		for _, a := range addrs {
			a = a.Unmap()
			if a.Is4() != want4 {
				continue
			}
			if x.egress.Check(a) != nil {
				denied = true
				continue
			}
			return nameResult{addr: a}
		}
	}
	if denied {
		return nameResult{drop: messages.DropPolicyDenied}
	}
	return nameResult{drop: messages.DropUnresolvable}
}

// notice tells the client why its datagrams to a destination are dropped: once per destination,
// for the first maxRefused destinations.
func (x *exitUDP) notice(h proxy.UDPHeader, drop messages.DropReason) {
	if x.notices >= maxRefused {
		return
	}
	x.notices++
	var host string
	if h.Domain != nil {
		host = string(h.Domain)
	} else {
		host = h.Addr.String()
	}
	code := noticeCode(drop)
	_ = x.control.SetWriteDeadline(time.Now().Add(time.Second)) // a client that reads nothing cannot stall the loop
	_ = netstack.WriteUDPNotice(x.control, netstack.UDPNotice{Code: code, Host: host, Port: h.Port})
}

// fromDestinations sends replies from the destinations back to the client until the host socket
// closes; datagrams from anyone the association did not send to are dropped.
func (x *exitUDP) fromDestinations(c proxy.UDPCounter) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	const room = 22 // the longest header PutUDPHeader writes, before the payload
	for {
		n, from, err := x.host.ReadFromUDPAddrPort(buf[room:])
		if err != nil {
			return err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		x.mu.RLock()
		_, known := x.sent[from]
		x.mu.RUnlock()
		if !known {
			c.Drop(messages.DropUnknownSource)
			continue
		}
		hl := proxy.UDPHeaderLen(from)
		proxy.PutUDPHeader(buf[room-hl:], from)
		if _, err := x.sock.Write(buf[room-hl : room+n]); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			c.Drop(messages.DropSendFailed)
			continue
		}
		c.Out(n)
	}
}
