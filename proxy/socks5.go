package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/warren-tunnel/warren/messages"
)

// SOCKS5 wire constants (RFC 1928).
const (
	socks5Version   = 0x05
	methodNoAuth    = 0x00
	methodNoAccept  = 0xFF
	cmdConnect      = 0x01
	atypIPv4        = 0x01
	atypDomain      = 0x03
	atypIPv6        = 0x04
	socksReplyV4Len = 10 // VER REP RSV ATYP(1) ADDR(4) PORT(2)
)

// socks5Handshake runs method negotiation and one CONNECT request on client.
func socks5Handshake(ctx context.Context, g *guard, client net.Conn, dial DialFunc) (*Session, error) {
	// 4 header + 1 length + 255 domain + 2 port; also big enough for the greeting (2+255).
	var buf [262]byte

	// Greeting: VER NMETHODS METHODS...
	if _, err := io.ReadFull(client, buf[:2]); err != nil {
		return nil, readErr("socks5 greeting", err)
	}
	if buf[0] != socks5Version {
		return nil, fmt.Errorf("%w: socks version %d", ErrBadRequest, buf[0])
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(client, methods); err != nil {
		return nil, readErr("socks5 greeting", truncated(err))
	}
	noAuth := false
	for _, m := range methods {
		if m == methodNoAuth {
			noAuth = true
			break
		}
	}
	if !noAuth {
		client.Write([]byte{socks5Version, methodNoAccept})
		return nil, fmt.Errorf("%w: no acceptable socks5 auth method", ErrUnsupported)
	}
	if _, err := client.Write([]byte{socks5Version, methodNoAuth}); err != nil {
		return nil, fmt.Errorf("proxy: socks5 write method: %w", err)
	}

	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT
	t, cmd, err := readSocks5Request(client, buf[:])
	if err != nil {
		code := messages.ReplyGeneralFailure
		if errors.Is(err, ErrUnsupported) {
			code = messages.ReplyAddressNotSupported
		}
		if errors.Is(err, ErrBadRequest) || errors.Is(err, ErrUnsupported) {
			writeSocks5Reply(client, code, nil)
		}
		return nil, err
	}
	if cmd != cmdConnect {
		writeSocks5Reply(client, messages.ReplyCommandNotSupported, nil)
		return nil, fmt.Errorf("%w: socks5 command %d", ErrUnsupported, cmd)
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

// readSocks5Request reads one request into buf and returns its target and command.
func readSocks5Request(r io.Reader, buf []byte) (Target, byte, error) {
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return Target{}, 0, readErr("socks5 request", err)
	}
	if buf[0] != socks5Version {
		return Target{}, 0, fmt.Errorf("%w: socks5 request version %d", ErrBadRequest, buf[0])
	}
	cmd := buf[1]
	var host string
	switch buf[3] {
	case atypIPv4:
		if _, err := io.ReadFull(r, buf[:4+2]); err != nil {
			return Target{}, 0, readErr("socks5 request", truncated(err))
		}
		host = netip.AddrFrom4([4]byte(buf[:4])).String()
		buf = buf[4:]
	case atypIPv6:
		if _, err := io.ReadFull(r, buf[:16+2]); err != nil {
			return Target{}, 0, readErr("socks5 request", truncated(err))
		}
		host = netip.AddrFrom16([16]byte(buf[:16])).Unmap().String()
		buf = buf[16:]
	case atypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return Target{}, 0, readErr("socks5 request", truncated(err))
		}
		n := int(buf[0])
		if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
			return Target{}, 0, readErr("socks5 request", truncated(err))
		}
		h, err := parseHost(string(buf[:n]))
		if err != nil {
			return Target{}, 0, err
		}
		host = h
		buf = buf[n:]
	default:
		return Target{}, 0, fmt.Errorf("%w: socks5 address type %d", ErrUnsupported, buf[3])
	}
	port := binary.BigEndian.Uint16(buf[:2])
	if port == 0 {
		return Target{}, 0, fmt.Errorf("%w: port 0", ErrBadRequest)
	}
	return Target{Host: host, Port: port}, cmd, nil
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
