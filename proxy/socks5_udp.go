package proxy

// SOCKS5 UDP ASSOCIATE (RFC 1928 §7): the reply to the request, the relay socket, the datagram
// header, and the two copy loops between the relay and the tunnel.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/warren-tunnel/warren/messages"
)

const (
	cmdUDPAssociate = 0x03
	// MaxUDPHeader is the longest SOCKS5 UDP request header: RSV(2) FRAG ATYP LEN DOMAIN(255) PORT(2).
	MaxUDPHeader = 4 + 1 + 255 + 2
	// maxDatagram bounds a datagram on either side (the largest UDP payload).
	maxDatagram = 65535
	// UDPSocketBuffer is the receive and send buffer asked for an association's host sockets (the
	// relay; the exit's socket towards destinations): memory the kernel takes only as datagrams
	// queue, capped by net.core.rmem_max and wmem_max.
	UDPSocketBuffer = 1 << 20
)

// ErrBadUDPHeader marks a datagram whose SOCKS5 UDP header does not parse.
var ErrBadUDPHeader = errors.New("proxy: bad socks5 udp header")

// AssociateFunc opens the tunnel side of a UDP association for a client whose UDP ASSOCIATE
// request was read and authenticated; an error refuses the request with its reply code
// (ReplyCodeOf).
type AssociateFunc func(ctx context.Context) error

// UDPSession is an association the handshake set up: the relay socket that takes the client's
// datagrams, bound to the address the client reached the proxy on (owned by the caller from here
// on), and the client it takes them from.
type UDPSession struct {
	Relay *net.UDPConn
	// client is the associating client's IP; port its UDP port, 0 until its first datagram (then
	// fixed). Written by the client-side loop, read by the tunnel-side loop.
	client netip.Addr
	port   atomic.Uint32
}

// Client is the client's address as known so far (port 0 until its first datagram).
func (s *UDPSession) Client() netip.AddrPort {
	return netip.AddrPortFrom(s.client, uint16(s.port.Load()))
}

// accept reports whether a datagram from from is the client's; the first one from the client's
// IP fixes its port when the request did not name one (called only for a datagram whose header
// parsed: bad input fixes nothing).
func (s *UDPSession) accept(from netip.AddrPort) bool {
	if from.Addr().Unmap() != s.client {
		return false
	}
	p := uint32(from.Port())
	if cur := s.port.Load(); cur != 0 {
		return cur == p
	}
	return s.port.CompareAndSwap(0, p) || s.port.Load() == p
}

// socks5Associate answers a UDP ASSOCIATE request r: assoc opens the tunnel side, then the relay
// is bound on the address the client reached the proxy on (never every interface) and named in
// the reply.
func socks5Associate(ctx context.Context, g *guard, client net.Conn, r socks5Request, opts Options) (*Session, error) {
	hint, err := r.hint()
	if err != nil {
		return nil, refuseAddress(client, err)
	}
	src := boundAddr(client.RemoteAddr())
	local := boundAddr(client.LocalAddr())
	if !src.IsValid() || !local.IsValid() {
		writeSocks5Reply(client, messages.ReplyGeneralFailure, nil)
		return nil, fmt.Errorf("proxy: udp associate: control connection has no IP addresses")
	}
	s := &UDPSession{client: src.Addr()}
	if hint.Addr().IsValid() && !hint.Addr().IsUnspecified() && hint.Addr().Unmap() != src.Addr().Unmap() {
		// Another host's address: its datagrams would be taken and replies sent to it (a reflector).
		writeSocks5Reply(client, messages.ReplyNotAllowed, nil)
		return nil, fmt.Errorf("%w: udp associate for %s from %s", ErrUnsupported, hint.Addr(), src.Addr())
	}
	s.port.Store(uint32(hint.Port()))
	if err := opts.Associate(ctx); err != nil {
		g.replyWindow(client)
		writeSocks5Reply(client, failureCode(err), nil)
		return nil, fmt.Errorf("proxy: udp associate: %w: %w", ErrDial, err)
	}
	relay, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
	if err != nil {
		writeSocks5Reply(client, messages.ReplyGeneralFailure, nil)
		return nil, fmt.Errorf("proxy: udp associate: bind relay on %s: %w", local.Addr(), err)
	}
	// A burst of datagrams (a QUIC flight) must not overflow the default buffer before the relay
	// loop reads it: the kernel drops those unseen and uncounted. Capped by net.core.rmem_max.
	_ = relay.SetReadBuffer(UDPSocketBuffer)
	_ = relay.SetWriteBuffer(UDPSocketBuffer)
	s.Relay = relay
	if err := writeSocks5Reply(client, messages.ReplySucceeded, relay.LocalAddr()); err != nil {
		relay.Close()
		return nil, fmt.Errorf("proxy: socks5 write reply: %w", err)
	}
	return &Session{Client: client, Method: "UDP ASSOCIATE", UDP: s}, nil
}

// hint is the address a UDP ASSOCIATE request names: where the client will send from (zero when
// it does not know yet). A domain is refused: the client's address cannot be a name.
func (r socks5Request) hint() (netip.AddrPort, error) {
	switch r.atyp {
	case atypIPv4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.addr)), r.port), nil
	case atypIPv6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(r.addr)).Unmap(), r.port), nil
	case atypDomain:
		return netip.AddrPort{}, fmt.Errorf("%w: udp associate with a domain address", ErrUnsupported)
	}
	return netip.AddrPort{}, fmt.Errorf("%w: socks5 address type %d", ErrUnsupported, r.atyp)
}

// UDPHeader is a parsed SOCKS5 UDP request header.
type UDPHeader struct {
	Frag   byte
	Addr   netip.Addr // the destination (or source) IP; invalid for a domain
	Domain []byte     // the domain, aliasing the datagram; nil for an IP
	Port   uint16
	Len    int // the header's length: the payload starts here
}

// ParseUDPHeader parses the header at the start of b. Port 0 and an empty domain are malformed.
func ParseUDPHeader(b []byte) (UDPHeader, error) {
	var h UDPHeader
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return h, ErrBadUDPHeader
	}
	h.Frag = b[2]
	var n int
	switch b[3] {
	case atypIPv4:
		if len(b) < 4+4+2 {
			return h, ErrBadUDPHeader
		}
		h.Addr, n = netip.AddrFrom4([4]byte(b[4:8])), 4+4
	case atypIPv6:
		if len(b) < 4+16+2 {
			return h, ErrBadUDPHeader
		}
		h.Addr, n = netip.AddrFrom16([16]byte(b[4:20])).Unmap(), 4+16
	case atypDomain:
		if len(b) < 5 || b[4] == 0 || len(b) < 5+int(b[4])+2 || !hostName(b[5:5+int(b[4])]) {
			return h, ErrBadUDPHeader
		}
		h.Domain, n = b[5:5+int(b[4])], 5+int(b[4])
	default:
		return h, ErrBadUDPHeader
	}
	h.Port = binary.BigEndian.Uint16(b[n : n+2])
	h.Len = n + 2
	if h.Port == 0 {
		return h, ErrBadUDPHeader
	}
	return h, nil
}

// hostName reports whether b is a host name the exit may resolve: the characters parseHost
// allows for a CONNECT (letters, digits, '-', '.', '_').
func hostName(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// UDPHeaderLen is the length of the header PutUDPHeader writes for a.
func UDPHeaderLen(a netip.AddrPort) int {
	if a.Addr().Unmap().Is4() {
		return 4 + 4 + 2
	}
	return 4 + 16 + 2
}

// PutUDPHeader writes a header naming a into b (at least UDPHeaderLen(a) long), an IPv4 address
// (also an IPv4-mapped one) as ATYP 1; it returns the length written.
func PutUDPHeader(b []byte, a netip.AddrPort) int {
	b[0], b[1], b[2] = 0, 0, 0
	ip := a.Addr().Unmap()
	if ip.Is4() {
		b[3] = atypIPv4
		v := ip.As4()
		copy(b[4:8], v[:])
		binary.BigEndian.PutUint16(b[8:10], a.Port())
		return 10
	}
	b[3] = atypIPv6
	v := ip.As16()
	copy(b[4:20], v[:])
	binary.BigEndian.PutUint16(b[20:22], a.Port())
	return 22
}

// UDPCounter counts an association's datagrams; called from its copy loops, once per datagram.
type UDPCounter interface {
	In(payload int)  // a datagram from the client went on towards its destination
	Out(payload int) // a datagram went back towards the client
	Drop(messages.DropReason)
}

// udpBufPool holds datagram buffers (one per copy loop while it runs).
var udpBufPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram+MaxUDPHeader); return &b }}

// RelayFromClient moves the client's datagrams from the relay to up (the tunnel side, one datagram
// per Write, header included) until the relay is closed or fails. Datagrams not from the client,
// with a header that does not parse, or fragments (FRAG ≠ 0) are dropped and counted.
func (s *UDPSession) RelayFromClient(up io.Writer, c UDPCounter) error {
	bp := udpBufPool.Get().(*[]byte)
	defer udpBufPool.Put(bp)
	buf := *bp
	for {
		n, from, err := s.Relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if from.Addr().Unmap() != s.client {
			c.Drop(messages.DropForeignSource)
			continue
		}
		h, err := ParseUDPHeader(buf[:n])
		switch {
		case err != nil:
			c.Drop(messages.DropMalformed)
			continue
		case h.Frag != 0:
			c.Drop(messages.DropFragmented)
			continue
		case !s.accept(from):
			c.Drop(messages.DropForeignSource)
			continue
		}
		if _, err := up.Write(buf[:n]); err != nil {
			if isClosed(err) {
				return err
			}
			c.Drop(messages.DropSendFailed)
			continue
		}
		c.In(n - h.Len)
	}
}

// RelayToClient moves datagrams from up (each with the header naming its source) to the client
// until up is closed or fails. Until the client's port is known there is no one to send to.
func (s *UDPSession) RelayToClient(up io.Reader, c UDPCounter) error {
	bp := udpBufPool.Get().(*[]byte)
	defer udpBufPool.Put(bp)
	buf := *bp
	for {
		n, err := up.Read(buf)
		if errors.Is(err, syscall.ECONNREFUSED) { // an ICMP error from the exit's side: not the end
			continue
		}
		if err != nil {
			return err
		}
		h, err := ParseUDPHeader(buf[:n])
		if err != nil || h.Frag != 0 {
			c.Drop(messages.DropMalformed)
			continue
		}
		to := s.Client()
		if to.Port() == 0 {
			c.Drop(messages.DropSendFailed)
			continue
		}
		if _, err := s.Relay.WriteToUDPAddrPort(buf[:n], to); err != nil {
			if isClosed(err) {
				return err
			}
			c.Drop(messages.DropSendFailed)
			continue
		}
		c.Out(n - h.Len)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
