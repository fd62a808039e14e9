package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// SOCKS5 wire constants (RFC 1928, RFC 1929).
const (
	socks5Version   = 0x05
	methodNoAuth    = 0x00
	methodUserPass  = 0x02
	methodNoAccept  = 0xFF
	userPassVersion = 0x01 // RFC 1929 subnegotiation version
	userPassOK      = 0x00
	userPassFailed  = 0x01
	cmdConnect      = 0x01
	atypIPv4        = 0x01
	atypDomain      = 0x03
	atypIPv6        = 0x04
	socksReplyV4Len = 10 // VER REP RSV ATYP(1) ADDR(4) PORT(2)
)

// socks5Handshake runs method negotiation, authentication (opts.Auth) and one CONNECT request on
// client. Reading the greeting, the credentials and the request is bounded by the handshake
// budget; the dial by ctx.
func socks5Handshake(ctx context.Context, g *guard, client net.Conn, dial DialFunc, opts Options) (*Session, error) {
	// 4 header + 1 length + 255 domain + 2 port; also big enough for the greeting (2+255) and
	// each half of the RFC 1929 request (1+1+255).
	var buf [262]byte
	deadline := time.Now().Add(opts.handshakeTimeout())
	g.limitRead(client, deadline)
	budget := func(err error) error {
		if handshakeExpired(ctx, err, deadline) {
			return fmt.Errorf("%w: %w", ErrHandshakeTimeout, err)
		}
		return err
	}

	// Greeting: VER NMETHODS METHODS...
	if _, err := io.ReadFull(client, buf[:2]); err != nil {
		return nil, readErr("socks5 greeting", budget(err))
	}
	if buf[0] != socks5Version {
		return nil, fmt.Errorf("%w: socks version %d", ErrBadRequest, buf[0])
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(client, methods); err != nil {
		return nil, readErr("socks5 greeting", budget(truncated(err)))
	}
	want := byte(methodNoAuth)
	if opts.Auth != nil {
		want = methodUserPass
	}
	if !bytes.Contains(methods, []byte{want}) {
		client.Write([]byte{socks5Version, methodNoAccept})
		if opts.Auth != nil {
			return nil, fmt.Errorf("%w: socks5 client offered no username/password method", ErrAuth)
		}
		return nil, fmt.Errorf("%w: no acceptable socks5 auth method", ErrUnsupported)
	}
	if _, err := client.Write([]byte{socks5Version, want}); err != nil {
		return nil, fmt.Errorf("proxy: socks5 write method: %w", err)
	}
	if opts.Auth != nil {
		if err := socks5Auth(client, buf[:], opts.Auth, budget); err != nil {
			return nil, err
		}
	}

	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT, read whole before anything is judged.
	r, err := readSocks5Request(client, buf[:])
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			writeSocks5Reply(client, messages.ReplyGeneralFailure, nil)
		}
		return nil, budget(err)
	}
	g.limitRead(client, time.Time{})
	if r.cmd == cmdUDPAssociate && opts.Associate != nil {
		return socks5Associate(ctx, g, client, r, opts)
	}
	if r.cmd != cmdConnect {
		writeSocks5Reply(client, messages.ReplyCommandNotSupported, nil)
		return nil, fmt.Errorf("%w: socks5 command %d", ErrUnsupported, r.cmd)
	}
	t, err := r.target()
	if err != nil {
		return nil, refuseAddress(client, err)
	}

	up, err := dialTarget(ctx, dial, t)
	if err != nil {
		g.replyWindow(client)
		writeSocks5Reply(client, failureCode(err), nil)
		return nil, err
	}
	if err := writeSocks5Reply(client, messages.ReplySucceeded, up.LocalAddr()); err != nil {
		up.Close()
		return nil, fmt.Errorf("proxy: socks5 write reply: %w", err)
	}
	return &Session{Target: t, Upstream: up, Client: client, Method: "CONNECT"}, nil
}

// refuseAddress answers a request whose address was refused (err from target or hint): 0x08 for an
// unsupported address type, else 0x01. It returns err.
func refuseAddress(client net.Conn, err error) error {
	code := messages.ReplyGeneralFailure
	if errors.Is(err, ErrUnsupported) {
		code = messages.ReplyAddressNotSupported
	}
	writeSocks5Reply(client, code, nil)
	return err
}

// socks5Auth runs the RFC 1929 subnegotiation: VER ULEN UNAME PLEN PASSWD, answered VER STATUS;
// a failure is answered and wraps ErrAuth (with the user name, never the password).
func socks5Auth(client net.Conn, buf []byte, auth Authenticator, budget func(error) error) error {
	if _, err := io.ReadFull(client, buf[:2]); err != nil {
		return readErr("socks5 authentication", budget(truncated(err)))
	}
	if buf[0] != userPassVersion {
		client.Write([]byte{userPassVersion, userPassFailed})
		return fmt.Errorf("%w: socks5 authentication version %d", ErrBadRequest, buf[0])
	}
	ulen := int(buf[1])
	if _, err := io.ReadFull(client, buf[:ulen+1]); err != nil {
		return readErr("socks5 authentication", budget(truncated(err)))
	}
	user := string(buf[:ulen])
	plen := int(buf[ulen])
	if _, err := io.ReadFull(client, buf[:plen]); err != nil {
		return readErr("socks5 authentication", budget(truncated(err)))
	}
	ok := auth.Authenticate(user, string(buf[:plen]))
	clear(buf[:plen])
	if !ok {
		client.Write([]byte{userPassVersion, userPassFailed})
		return fmt.Errorf("%w: socks5 user %s", ErrAuth, quoteUser(user))
	}
	if _, err := client.Write([]byte{userPassVersion, userPassOK}); err != nil {
		return fmt.Errorf("proxy: socks5 write authentication status: %w", err)
	}
	return nil
}

// quoteUser renders a client-supplied user name for an error message: quoted, at most 64 bytes.
func quoteUser(u string) string {
	if len(u) > 64 {
		return strconv.Quote(u[:64]) + "…"
	}
	return strconv.Quote(u)
}

// socks5Request is a request as read, not yet judged.
type socks5Request struct {
	cmd, atyp byte
	addr      []byte // the address bytes (a domain without its length byte); valid until buf is reused
	port      uint16
}

// readSocks5Request reads one whole request into buf. Only a wrong version, an unknown address
// type (its length is unknown: the rest stays unread) or a read failure are errors here; the
// command and address are judged by the caller, command first.
func readSocks5Request(r io.Reader, buf []byte) (socks5Request, error) {
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return socks5Request{}, readErr("socks5 request", err)
	}
	req := socks5Request{cmd: buf[1], atyp: buf[3]}
	if buf[0] != socks5Version {
		return req, fmt.Errorf("%w: socks5 request version %d", ErrBadRequest, buf[0])
	}
	var n int
	switch req.atyp {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return req, readErr("socks5 request", truncated(err))
		}
		n = int(buf[0])
	default:
		return req, nil
	}
	if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
		return req, readErr("socks5 request", truncated(err))
	}
	req.addr = buf[:n]
	req.port = binary.BigEndian.Uint16(buf[n : n+2])
	return req, nil
}

// target validates the request's address.
func (r socks5Request) target() (Target, error) {
	var host string
	switch r.atyp {
	case atypIPv4:
		host = netip.AddrFrom4([4]byte(r.addr)).String()
	case atypIPv6:
		host = netip.AddrFrom16([16]byte(r.addr)).Unmap().String()
	case atypDomain:
		h, err := parseHost(string(r.addr))
		if err != nil {
			return Target{}, err
		}
		host = h
	default:
		return Target{}, fmt.Errorf("%w: socks5 address type %d", ErrUnsupported, r.atyp)
	}
	if r.port == 0 {
		return Target{}, fmt.Errorf("%w: port 0", ErrBadRequest)
	}
	return Target{Host: host, Port: r.port}, nil
}

// writeSocks5Reply writes a reply with BND.ADDR from bound when it is an IP address, else 0.0.0.0:0.
func writeSocks5Reply(w io.Writer, code messages.ReplyCode, bound net.Addr) error {
	var b [4 + 16 + 2]byte
	b[0], b[1], b[2], b[3] = socks5Version, byte(code), 0, atypIPv4
	ap := boundAddr(bound)
	n := socksReplyV4Len
	if ap.Addr().Is4() {
		a := ap.Addr().As4()
		copy(b[4:8], a[:])
		binary.BigEndian.PutUint16(b[8:10], ap.Port())
	} else if ap.Addr().Is6() {
		b[3] = atypIPv6
		a := ap.Addr().As16()
		copy(b[4:20], a[:])
		binary.BigEndian.PutUint16(b[20:22], ap.Port())
		n = len(b)
	}
	_, err := w.Write(b[:n])
	return err
}

// boundAddr extracts an IP address and port from a, or returns the zero AddrPort.
func boundAddr(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case nil:
		return netip.AddrPort{}
	case *net.TCPAddr:
		if v == nil {
			return netip.AddrPort{}
		}
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// readErr wraps a read error; a message cut short is a bad request.
func readErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("proxy: %s: %w: %w", what, ErrBadRequest, err)
	}
	return fmt.Errorf("proxy: %s: %w", what, err)
}

// truncated turns an EOF in the middle of a message into io.ErrUnexpectedEOF.
func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
