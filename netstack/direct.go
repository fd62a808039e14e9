package netstack

// Dialing through a tunnel whose peer is a standard WireGuard server: no connect protocol, so
// destinations are dialled straight through the stack, and names resolve through DNS servers
// reached inside the tunnel (socks5h semantics: never through the host's resolver).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/warren-tunnel/warren/messages"
)

// ErrNoResolver: a name was given and the WireGuard exit's configuration names no DNS server.
var ErrNoResolver = errors.New("no DNS server configured for this tunnel")

// dnsTry bounds one query to one server, during which the question is sent again every
// dnsResend that goes unanswered (a datagram lost in the tunnel costs that, not the whole try);
// the context bounds the whole resolution.
const (
	dnsTry    = 2 * time.Second
	dnsResend = 500 * time.Millisecond
)

// DirectDialer dials destinations straight through Stack, whose peer forwards its traffic (a
// standard WireGuard server). Refusals are *DialError with the reply code a proxy client gets.
type DirectDialer struct {
	Stack *Stack       // the client's stack; alive while the device that owns it is
	DNS   []netip.Addr // resolvers reached through the tunnel, tried in order
	// Allowed is where the peer takes traffic (its AllowedIPs); empty: everywhere. A destination
	// outside it is refused at once (network unreachable) rather than dropped by WireGuard.
	Allowed []netip.Prefix
}

// DialTCP connects to host:port; a name resolves through d.DNS inside the tunnel.
func (d DirectDialer) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	if d.Stack == nil {
		return nil, &DialError{Code: messages.ReplyNetworkUnreachable, Err: errors.New("no tunnel device")}
	}
	addr, err := d.Resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	if !d.allows(addr) {
		return nil, &DialError{Code: messages.ReplyNetworkUnreachable, Err: fmt.Errorf("%s is outside the peer's AllowedIPs", addr)}
	}
	c, err := d.Stack.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, port))
	if err != nil {
		code := ReplyCodeForDial(err)
		if ctx.Err() != nil {
			code = messages.ReplyTTLExpired
		}
		return nil, &DialError{Code: code, Err: fmt.Errorf("dial %s through the tunnel: %w", net.JoinHostPort(host, strconv.Itoa(int(port))), err)}
	}
	return c, nil
}

// AssociateUDP is refused (command not supported): a standard WireGuard server has no connect
// service to carry a SOCKS5 UDP association's control channel.
func (d DirectDialer) AssociateUDP(context.Context) (*UDPAssociation, error) {
	return nil, &DialError{Code: messages.ReplyCommandNotSupported, Err: ErrNoUDPAssociate}
}

// ErrNoUDPAssociate: SOCKS5 UDP ASSOCIATE through a standard WireGuard server (not carried yet).
var ErrNoUDPAssociate = errors.New("UDP associations are not carried through a WireGuard exit")

func (d DirectDialer) allows(a netip.Addr) bool {
	if len(d.Allowed) == 0 {
		return true
	}
	for _, p := range d.Allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve returns host's address: an IP literal as it is, a name through d.DNS (A first when the
// stack has an IPv4 address or none of IPv6, then AAAA).
func (d DirectDialer) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	if len(d.DNS) == 0 {
		return netip.Addr{}, &DialError{Code: messages.ReplyHostUnreachable, Err: fmt.Errorf("resolve %q: %w", host, ErrNoResolver)}
	}
	name, err := dnsmessage.NewName(dnsName(host))
	if err != nil {
		return netip.Addr{}, &DialError{Code: messages.ReplyHostUnreachable, Err: fmt.Errorf("resolve %q: %w", host, err)}
	}
	types := []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}
	if d.Stack.has6() && !d.Stack.has4() {
		types = []dnsmessage.Type{dnsmessage.TypeAAAA, dnsmessage.TypeA}
	}
	var last error
	timedOut := false // some query went unanswered: the failure is a timeout, not a missing name
	for _, typ := range types {
		for _, server := range d.DNS {
			a, err := d.query(ctx, server, name, typ)
			if err == nil {
				return a, nil
			}
			last = err
			timedOut = timedOut || isTimeout(err)
			if ctx.Err() != nil {
				return netip.Addr{}, &DialError{Code: messages.ReplyTTLExpired, Err: fmt.Errorf("resolve %q: %w", host, ctx.Err())}
			}
			if errors.Is(err, errNoRecord) {
				break // this server answered: no such record of this type; try the next type
			}
		}
	}
	code := messages.ReplyHostUnreachable
	if timedOut {
		code = messages.ReplyTTLExpired
	}
	return netip.Addr{}, &DialError{Code: code, Err: fmt.Errorf("resolve %q: %w", host, last)}
}

// errNoRecord: the server answered, with no address of the type asked (or NXDOMAIN).
var errNoRecord = errors.New("no such address")

// query asks server for name's records of typ over UDP through the tunnel.
func (d DirectDialer) query(ctx context.Context, server netip.Addr, name dnsmessage.Name, typ dnsmessage.Type) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTry)
	defer cancel()
	c, err := d.Stack.DialContext(ctx, "udp", netip.AddrPortFrom(server, 53))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline() // set: dnsTry at most
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var idb [2]byte
	_, _ = rand.Read(idb[:]) // an unpredictable id: the resolver may sit behind the server's NAT
	id := binary.BigEndian.Uint16(idb[:])
	question := dnsmessage.Question{Name: name, Type: typ, Class: dnsmessage.ClassINET}
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{question}}
	b, err := q.Pack()
	if err != nil {
		return netip.Addr{}, err
	}
	send := func() error {
		if _, err := c.Write(b); err != nil {
			return err
		}
		if ctx.Err() == nil { // else AfterFunc has set the deadline in the past, for good
			next := time.Now().Add(dnsResend)
			if dl.Before(next) {
				next = dl
			}
			_ = c.SetReadDeadline(next)
			if ctx.Err() != nil { // cancelled meanwhile: AfterFunc's past deadline may have been overwritten
				_ = c.SetDeadline(time.Unix(1, 0))
			}
		}
		return nil
	}
	if err := send(); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil && isTimeout(err) && ctx.Err() == nil && time.Now().Before(dl) {
			if err := send(); err != nil { // unanswered for dnsResend: ask again
				return netip.Addr{}, err
			}
			continue
		}
		if err != nil {
			return netip.Addr{}, err
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || h.ID != id || !h.Response {
			continue // not the answer to this query
		}
		if got, err := p.Question(); err != nil || got != question {
			continue // an answer to another question with the same id
		}
		if h.Truncated {
			return netip.Addr{}, fmt.Errorf("DNS answer from %s truncated (no TCP fallback)", server)
		}
		if h.RCode == dnsmessage.RCodeNameError {
			return netip.Addr{}, fmt.Errorf("%w (NXDOMAIN from %s)", errNoRecord, server)
		}
		if h.RCode != dnsmessage.RCodeSuccess {
			return netip.Addr{}, fmt.Errorf("DNS server %s answered %s", server, h.RCode)
		}
		if err := p.SkipAllQuestions(); err != nil { // the rest of them (one was asked)
			return netip.Addr{}, fmt.Errorf("DNS answer from %s: %w", server, err)
		}
		for {
			rh, err := p.AnswerHeader()
			if err != nil {
				return netip.Addr{}, fmt.Errorf("%w from %s", errNoRecord, server)
			}
			switch {
			case rh.Type == dnsmessage.TypeA && typ == dnsmessage.TypeA:
				r, err := p.AResource()
				if err != nil {
					return netip.Addr{}, err
				}
				return netip.AddrFrom4(r.A), nil
			case rh.Type == dnsmessage.TypeAAAA && typ == dnsmessage.TypeAAAA:
				r, err := p.AAAAResource()
				if err != nil {
					return netip.Addr{}, err
				}
				return netip.AddrFrom16(r.AAAA).Unmap(), nil
			default:
				if err := p.SkipAnswer(); err != nil { // a CNAME on the way: its target's records follow
					return netip.Addr{}, err
				}
			}
		}
	}
}

// dnsName is host as a fully qualified name.
func dnsName(host string) string {
	if len(host) > 0 && host[len(host)-1] == '.' {
		return host
	}
	return host + "."
}

func (s *Stack) has4() bool {
	for _, a := range s.own {
		if a.Is4() {
			return true
		}
	}
	return false
}

func (s *Stack) has6() bool {
	for _, a := range s.own {
		if a.Is6() {
			return true
		}
	}
	return false
}
