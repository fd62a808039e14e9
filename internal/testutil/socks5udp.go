package testutil

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// SOCKS5UDP is a SOCKS5 UDP ASSOCIATE client (RFC 1928 §7): a net.PacketConn whose datagrams go
// through the proxy. WriteTo prefixes each datagram with the SOCKS5 UDP request header and sends
// it to the relay; ReadFrom takes the relay's datagrams, strips the header and returns the source
// it names. One reader and one writer may use it at once (each direction has its own buffer under
// its own lock). The association lives as long as Control, its TCP connection; Close closes both.
type SOCKS5UDP struct {
	ctrl  net.Conn
	local *net.UDPConn
	relay netip.AddrPort // as the reply said
	to    netip.AddrPort // where datagrams go: relay, with an unspecified address replaced by the proxy's

	wmu  sync.Mutex
	wbuf []byte
	rmu  sync.Mutex
	rbuf []byte
}

// SOCKS5ReplyError is a SOCKS5 reply other than 0x00 (succeeded) to the UDP ASSOCIATE request;
// DialSOCKS5UDP returns it wrapped (errors.As with a SOCKS5ReplyError value).
type SOCKS5ReplyError struct{ Code byte }

func (e SOCKS5ReplyError) Error() string { return fmt.Sprintf("socks5: reply %#02x", e.Code) }

// ErrSOCKS5Auth: the proxy accepted none of the offered methods (0xFF), or refused the
// username and password (RFC 1929 status ≠ 0).
var ErrSOCKS5Auth = errors.New("socks5: authentication refused")

// ErrSOCKS5UDPMalformed: the relay sent a datagram whose header does not parse.
var ErrSOCKS5UDPMalformed = errors.New("socks5 udp: malformed datagram from the relay")

// DomainAddr is a destination by name, resolved by the proxy (SOCKS5 ATYP 3).
type DomainAddr struct {
	Host string
	Port uint16
}

// Network is "udp".
func (DomainAddr) Network() string { return "udp" }

// String is host:port.
func (d DomainAddr) String() string { return net.JoinHostPort(d.Host, strconv.Itoa(int(d.Port))) }

// SOCKS5 UDP header layout (RFC 1928 §7): RSV RSV FRAG ATYP DST.ADDR DST.PORT.
const (
	socks5AtypIPv4   = 1
	socks5AtypDomain = 3
	socks5AtypIPv6   = 4
	socks5UDPMaxHdr  = 4 + 1 + 255 + 2
	socks5UDPMaxData = 65535
)

// DialSOCKS5UDP opens a UDP association through the SOCKS5 proxy at proxyAddr (user "" offers no
// authentication, else username/password). Its local UDP socket is bound on the address the
// control connection came from (127.0.0.1 for a proxy on 127.0.0.1) with a random port; the
// request names DST 0.0.0.0:0 (the proxy takes the client's address from the control connection
// and its port from the first datagram). ctx bounds the dial and the handshake.
func DialSOCKS5UDP(ctx context.Context, proxyAddr, user, pass string) (*SOCKS5UDP, error) {
	return DialSOCKS5UDPFrom(ctx, proxyAddr, user, pass, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
}

// DialSOCKS5UDPFrom is DialSOCKS5UDP with hint as the request's DST.ADDR and DST.PORT (where the
// client says it will send from). The local socket is bound as DialSOCKS5UDP binds it, whatever
// hint says: a hint that does not match it makes Local's datagrams foreign to the relay.
func DialSOCKS5UDPFrom(ctx context.Context, proxyAddr, user, pass string, hint netip.AddrPort) (*SOCKS5UDP, error) {
	var d net.Dialer
	ctrl, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("socks5 udp: dial proxy: %w", err)
	}
	s, err := associate(ctx, ctrl, user, pass, hint)
	if err != nil {
		ctrl.Close()
		return nil, err
	}
	return s, nil
}

func associate(ctx context.Context, ctrl net.Conn, user, pass string, hint netip.AddrPort) (*SOCKS5UDP, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = ctrl.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = ctrl.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := socks5Greet(ctrl, user, pass); err != nil {
		return nil, err
	}
	req, err := appendSOCKS5Addr([]byte{5, 3, 0}, hint)
	if err != nil {
		return nil, err
	}
	if _, err := ctrl.Write(req); err != nil {
		return nil, fmt.Errorf("socks5 udp: write request: %w", err)
	}
	relay, err := readSOCKS5Reply(ctrl)
	if err != nil {
		return nil, err
	}
	if !stop() {
		return nil, fmt.Errorf("socks5 udp: %w", ctx.Err())
	}
	_ = ctrl.SetDeadline(time.Time{})

	localIP := netip.IPv4Unspecified()
	if ap, err := netip.ParseAddrPort(ctrl.LocalAddr().String()); err == nil {
		localIP = ap.Addr().Unmap()
	}
	local, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localIP, 0)))
	if err != nil {
		return nil, fmt.Errorf("socks5 udp: local socket: %w", err)
	}
	to := relay
	if to.Addr().IsUnspecified() {
		if ap, err := netip.ParseAddrPort(ctrl.RemoteAddr().String()); err == nil {
			to = netip.AddrPortFrom(ap.Addr(), relay.Port())
		}
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	return &SOCKS5UDP{ctrl: ctrl, local: local, relay: relay, to: to,
		wbuf: make([]byte, 0, socks5UDPMaxHdr+socks5UDPMaxData), rbuf: make([]byte, socks5UDPMaxData)}, nil
}

// socks5Greet offers one method (no auth, or username/password) and, for the latter, runs the
// RFC 1929 subnegotiation.
func socks5Greet(c net.Conn, user, pass string) error {
	method := byte(0)
	if user != "" {
		method = 2
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return fmt.Errorf("socks5 udp: write greeting: %w", err)
	}
	var rep [2]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("socks5 udp: method reply: %w", err)
	}
	if rep[0] != 5 {
		return fmt.Errorf("socks5 udp: method reply %x", rep)
	}
	if rep[1] == 0xff {
		return fmt.Errorf("socks5 udp: no acceptable method: %w", ErrSOCKS5Auth)
	}
	if rep[1] != method {
		return fmt.Errorf("socks5 udp: proxy chose method %d, offered %d", rep[1], method)
	}
	if user == "" {
		return nil
	}
	if len(user) > 255 || len(pass) > 255 {
		return errors.New("socks5 udp: user or password longer than 255 bytes")
	}
	b := append([]byte{1, byte(len(user))}, user...)
	b = append(append(b, byte(len(pass))), pass...)
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("socks5 udp: write credentials: %w", err)
	}
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("socks5 udp: authentication status: %w", err)
	}
	if rep[1] != 0 {
		return fmt.Errorf("socks5 udp: status %d: %w", rep[1], ErrSOCKS5Auth)
	}
	return nil
}

// readSOCKS5Reply reads VER REP RSV ATYP BND.ADDR BND.PORT and returns BND, or a wrapped
// SOCKS5ReplyError for REP ≠ 0.
func readSOCKS5Reply(c net.Conn) (netip.AddrPort, error) {
	var b [4 + 255 + 2]byte
	if _, err := io.ReadFull(c, b[:4]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5 udp: reply: %w", err)
	}
	if b[0] != 5 {
		return netip.AddrPort{}, fmt.Errorf("socks5 udp: reply version %d", b[0])
	}
	if b[1] != 0 {
		return netip.AddrPort{}, fmt.Errorf("socks5 udp associate: %w", SOCKS5ReplyError{Code: b[1]})
	}
	var n int
	switch b[3] {
	case socks5AtypIPv4:
		n = 4
	case socks5AtypIPv6:
		n = 16
	default:
		return netip.AddrPort{}, fmt.Errorf("socks5 udp: reply address type %d", b[3])
	}
	if _, err := io.ReadFull(c, b[4:4+n+2]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5 udp: reply address: %w", err)
	}
	a, _ := netip.AddrFromSlice(b[4 : 4+n])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[4+n:])), nil
}

// appendSOCKS5Addr appends ATYP DST.ADDR DST.PORT for an IP address (IPv4 and IPv4-mapped IPv6 as
// ATYP 1).
func appendSOCKS5Addr(b []byte, ap netip.AddrPort) ([]byte, error) {
	a := ap.Addr().Unmap()
	switch {
	case a.Is4():
		v := a.As4()
		b = append(append(b, socks5AtypIPv4), v[:]...)
	case a.Is6():
		v := a.As16()
		b = append(append(b, socks5AtypIPv6), v[:]...)
	default:
		return b, fmt.Errorf("socks5 udp: invalid address %v", ap)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port()), nil
}

// SOCKS5UDPHeader is the SOCKS5 UDP request header for dst with FRAG frag, for raw datagrams sent
// on Local.
func SOCKS5UDPHeader(dst netip.AddrPort, frag byte) []byte {
	b, err := appendSOCKS5Addr([]byte{0, 0, frag}, dst)
	if err != nil {
		panic(err)
	}
	return b
}

// Relay is BND.ADDR:BND.PORT from the proxy's reply.
func (s *SOCKS5UDP) Relay() netip.AddrPort { return s.relay }

// Control is the association's TCP control connection.
func (s *SOCKS5UDP) Control() net.Conn { return s.ctrl }

// Local is the local UDP socket, for raw (malformed, fragmented) datagrams to Relay.
func (s *SOCKS5UDP) Local() *net.UDPConn { return s.local }

// WriteTo sends p to addr (a *net.UDPAddr or a DomainAddr) through the relay and returns len(p).
func (s *SOCKS5UDP) WriteTo(p []byte, addr net.Addr) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := append(s.wbuf[:0], 0, 0, 0)
	switch a := addr.(type) {
	case *net.UDPAddr:
		var err error
		if b, err = appendSOCKS5Addr(b, a.AddrPort()); err != nil {
			return 0, err
		}
	case DomainAddr:
		if b = appendDomain(b, a); b == nil {
			return 0, fmt.Errorf("socks5 udp: host name %q: 1-255 bytes", a.Host)
		}
	case *DomainAddr:
		if b = appendDomain(b, *a); b == nil {
			return 0, fmt.Errorf("socks5 udp: host name %q: 1-255 bytes", a.Host)
		}
	default:
		return 0, fmt.Errorf("socks5 udp: unsupported address %T", addr)
	}
	b = append(b, p...)
	s.wbuf = b[:0]
	if _, err := s.local.WriteToUDPAddrPort(b, s.to); err != nil {
		return 0, err
	}
	return len(p), nil
}

func appendDomain(b []byte, d DomainAddr) []byte {
	if len(d.Host) == 0 || len(d.Host) > 255 {
		return nil
	}
	b = append(append(b, socks5AtypDomain, byte(len(d.Host))), d.Host...)
	return binary.BigEndian.AppendUint16(b, d.Port)
}

// ReadFrom reads the next datagram from the relay into p (truncated if p is short) and returns
// the payload's length and the source its header names (a *net.UDPAddr; a DomainAddr for ATYP
// 3). Datagrams from anywhere but the relay are skipped. A datagram from the relay whose header
// does not parse, or whose FRAG is not 0, is an error wrapping ErrSOCKS5UDPMalformed.
func (s *SOCKS5UDP) ReadFrom(p []byte) (int, net.Addr, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for {
		n, from, err := s.local.ReadFromUDPAddrPort(s.rbuf)
		if err != nil {
			return 0, nil, err
		}
		if from.Port() != s.to.Port() || from.Addr().Unmap() != s.to.Addr() {
			continue
		}
		b := s.rbuf[:n]
		src, hdr, err := parseSOCKS5UDP(b)
		if err != nil {
			return 0, nil, err
		}
		return copy(p, b[hdr:]), src, nil
	}
}

// parseSOCKS5UDP parses a datagram's header: its source and the header's length.
func parseSOCKS5UDP(b []byte) (net.Addr, int, error) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0 {
		return nil, 0, fmt.Errorf("%w: header % x", ErrSOCKS5UDPMalformed, b[:min(len(b), 4)])
	}
	switch b[3] {
	case socks5AtypIPv4, socks5AtypIPv6:
		n := 4
		if b[3] == socks5AtypIPv6 {
			n = 16
		}
		if len(b) < 4+n+2 {
			return nil, 0, fmt.Errorf("%w: %d bytes", ErrSOCKS5UDPMalformed, len(b))
		}
		a, _ := netip.AddrFromSlice(b[4 : 4+n])
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[4+n:]))), 4 + n + 2, nil
	case socks5AtypDomain:
		if len(b) < 5 || len(b) < 5+int(b[4])+2 {
			return nil, 0, fmt.Errorf("%w: %d bytes", ErrSOCKS5UDPMalformed, len(b))
		}
		l := int(b[4])
		return DomainAddr{Host: string(b[5 : 5+l]), Port: binary.BigEndian.Uint16(b[5+l:])}, 5 + l + 2, nil
	}
	return nil, 0, fmt.Errorf("%w: address type %d", ErrSOCKS5UDPMalformed, b[3])
}

// Close closes the control connection (which ends the association) and the local socket.
func (s *SOCKS5UDP) Close() error {
	err := s.ctrl.Close()
	if lerr := s.local.Close(); err == nil {
		err = lerr
	}
	return err
}

// LocalAddr is the local UDP socket's address.
func (s *SOCKS5UDP) LocalAddr() net.Addr { return s.local.LocalAddr() }

// SetDeadline sets the local UDP socket's deadlines (not the control connection's).
func (s *SOCKS5UDP) SetDeadline(t time.Time) error { return s.local.SetDeadline(t) }

// SetReadDeadline sets the local UDP socket's read deadline.
func (s *SOCKS5UDP) SetReadDeadline(t time.Time) error { return s.local.SetReadDeadline(t) }

// SetWriteDeadline sets the local UDP socket's write deadline.
func (s *SOCKS5UDP) SetWriteDeadline(t time.Time) error { return s.local.SetWriteDeadline(t) }

var _ net.PacketConn = (*SOCKS5UDP)(nil)
