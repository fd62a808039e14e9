package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// The connect protocol runs inside the tunnel, from a client to its exit's connect service, at the
// start of each TCP connection:
//
//	request: 'W' version cmd hostlen host[hostlen] port[2, big endian] (from[2]: ConnectCmdRefusal)
//	reply:   'W' version code
//
// cmd is ConnectCmdTCP (then the stream carries the connection's bytes), ConnectCmdPing (a
// liveness probe; host is empty, port 0; the exit replies and closes), ConnectCmdUDP (udp.go) or
// ConnectCmdRefusal (connect_direct.go). The host is an IP literal or a name the exit resolves, so
// names never leak to the client's network. code is a messages.ReplyCode.
const (
	connectMagic    = 'W'
	connectVersion  = 1
	ConnectCmdTCP   = 1
	ConnectCmdPing  = 2
	maxConnectHost  = 255
	DefaultConnPort = 7070 // the exit's connect service port on its tunnel address
)

// ErrBadConnectRequest: a malformed connect-protocol request.
var ErrBadConnectRequest = errors.New("bad connect request")

// ConnectRequest is a parsed request header.
type ConnectRequest struct {
	Cmd  byte
	Host string
	Port uint16
	From uint16 // ConnectCmdRefusal only: the refused flow's source port, after Port on the wire
}

// ReadConnectRequest reads one request header from r.
func ReadConnectRequest(r io.Reader) (ConnectRequest, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return ConnectRequest{}, fmt.Errorf("%w: header: %w", ErrBadConnectRequest, err)
	}
	if hdr[0] != connectMagic || hdr[1] != connectVersion {
		return ConnectRequest{}, fmt.Errorf("%w: magic/version %#x %d", ErrBadConnectRequest, hdr[0], hdr[1])
	}
	req := ConnectRequest{Cmd: hdr[2]}
	n := int(hdr[3]) + 2
	if req.Cmd == ConnectCmdRefusal {
		n += 2 // From
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return ConnectRequest{}, fmt.Errorf("%w: host/port: %w", ErrBadConnectRequest, err)
	}
	req.Host = string(buf[:hdr[3]])
	req.Port = binary.BigEndian.Uint16(buf[hdr[3]:])
	if req.Cmd == ConnectCmdRefusal {
		req.From = binary.BigEndian.Uint16(buf[int(hdr[3])+2:])
	}
	switch req.Cmd {
	case ConnectCmdTCP:
		if req.Host == "" || req.Port == 0 {
			return req, fmt.Errorf("%w: empty host or port 0", ErrBadConnectRequest)
		}
	case ConnectCmdPing:
	case ConnectCmdUDP:
		if req.Host != "" || req.Port == 0 {
			return req, fmt.Errorf("%w: udp association with a host or port 0", ErrBadConnectRequest)
		}
	case ConnectCmdRefusal:
		if _, err := netip.ParseAddr(req.Host); err != nil || req.Port == 0 || req.From == 0 {
			return req, fmt.Errorf("%w: refusal query for %q port %d from port %d: not an address and ports", ErrBadConnectRequest, req.Host, req.Port, req.From)
		}
	default:
		return req, fmt.Errorf("%w: command %d", ErrBadConnectRequest, req.Cmd)
	}
	return req, nil
}

// WriteConnectReply answers a request.
func WriteConnectReply(w io.Writer, code messages.ReplyCode) error {
	_, err := w.Write([]byte{connectMagic, connectVersion, byte(code)})
	return err
}

func writeConnectRequest(w io.Writer, req ConnectRequest) error {
	if len(req.Host) > maxConnectHost {
		return fmt.Errorf("%w: host longer than %d", ErrBadConnectRequest, maxConnectHost)
	}
	buf := make([]byte, 0, 8+len(req.Host))
	buf = append(buf, connectMagic, connectVersion, req.Cmd, byte(len(req.Host)))
	buf = append(buf, req.Host...)
	buf = binary.BigEndian.AppendUint16(buf, req.Port)
	if req.Cmd == ConnectCmdRefusal {
		buf = binary.BigEndian.AppendUint16(buf, req.From)
	}
	_, err := w.Write(buf)
	return err
}

func readConnectReply(r io.Reader) (messages.ReplyCode, error) {
	var rep [3]byte
	if _, err := io.ReadFull(r, rep[:]); err != nil {
		return 0, fmt.Errorf("connect reply: %w", err)
	}
	if rep[0] != connectMagic || rep[1] != connectVersion {
		return 0, fmt.Errorf("connect reply: bad magic/version %#x %d", rep[0], rep[1])
	}
	return messages.ReplyCode(rep[2]), nil
}

// Dialer opens connections through a tunnel to a Warren exit: by asking the exit's connect
// service, or, with Direct, as direct flows to destinations given as addresses (connect_direct.go).
type Dialer struct {
	Stack   *Stack         // the client's stack; alive while the device that owns it is
	Service netip.AddrPort // the exit's connect service
	Exit    []netip.Addr   // the exit's tunnel addresses (the service's among them)
	// Direct dials destinations given as IP addresses as direct flows, which a Warren exit serves
	// and whose refusals it explains (ConnectCmdRefusal); names still go through the service.
	Direct bool
}

// DialTCP connects to host:port via the exit. A refusal by the exit is a *DialError with its code.
func (d Dialer) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	if dst, ok := d.directTo(host, port); ok {
		c, err := d.dialDirect(ctx, dst)
		if err != nil {
			return nil, fmt.Errorf("dial %s via exit: %w", net.JoinHostPort(host, fmt.Sprint(port)), err)
		}
		return c, nil
	}
	c, err := d.exchange(ctx, ConnectRequest{Cmd: ConnectCmdTCP, Host: host, Port: port})
	if err != nil {
		return nil, fmt.Errorf("dial %s via exit: %w", net.JoinHostPort(host, fmt.Sprint(port)), err)
	}
	return c, nil
}

// Echo is the probe datagram's prefix: the exit's echo service answers datagrams that start with it
// (at most maxEcho bytes) and drops the rest.
var echoMagic = [2]byte{'W', 'E'}

const maxEcho = 64

// ServeEcho answers probe datagrams on pc until its owner closes stop and then pc. Run by the
// exit's device actor.
func ServeEcho(pc net.PacketConn, stop <-chan struct{}) {
	var buf [maxEcho + 1]byte
	for {
		n, from, err := pc.ReadFrom(buf[:])
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) { // gonet's UDP read after Close: EOF
				return
			}
			continue
		}
		if n < len(echoMagic) || n > maxEcho || buf[0] != echoMagic[0] || buf[1] != echoMagic[1] {
			continue
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// PingUDP proves the data plane with one datagram round trip to the exit's echo service (same
// address as the connect service): cheaper than a TCP ping, and no connection on the exit.
func (d Dialer) PingUDP(ctx context.Context) error {
	if d.Stack == nil {
		return errors.New("ping exit: no tunnel device")
	}
	c, err := d.Stack.DialContext(ctx, "udp", d.Service)
	if err != nil {
		return fmt.Errorf("ping exit: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) }) // cancellation, too
	defer stop()
	var probe, reply [10]byte
	copy(probe[:], echoMagic[:])
	binary.BigEndian.PutUint64(probe[2:], uint64(time.Now().UnixNano()))
	if _, err := c.Write(probe[:]); err != nil {
		return fmt.Errorf("ping exit: %w", err)
	}
	for {
		n, err := c.Read(reply[:])
		if err != nil {
			return fmt.Errorf("ping exit: %w", err)
		}
		if n == len(probe) && reply == probe {
			return nil
		}
	}
}

// Ping proves the data plane end to end: a TCP round trip to the exit's connect service.
func (d Dialer) Ping(ctx context.Context) error {
	c, err := d.exchange(ctx, ConnectRequest{Cmd: ConnectCmdPing})
	if err != nil {
		return fmt.Errorf("ping exit: %w", err)
	}
	return c.Close()
}

func (d Dialer) exchange(ctx context.Context, req ConnectRequest) (net.Conn, error) {
	if d.Stack == nil {
		return nil, &DialError{Code: messages.ReplyNetworkUnreachable, Err: errors.New("no tunnel device")}
	}
	c, err := d.Stack.DialContext(ctx, "tcp", d.Service)
	if err != nil {
		return nil, &DialError{Code: ReplyCodeForDial(err), Err: fmt.Errorf("reach exit connect service %s: %w", d.Service, err)}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// A cancelled ctx without a deadline must still unblock the exchange.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeConnectRequest(c, req); err != nil {
		c.Close()
		return nil, err
	}
	code, err := readConnectReply(c)
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, &DialError{Code: ReplyCodeForDial(err), Err: err}
	}
	if code != messages.ReplySucceeded {
		c.Close()
		return nil, &DialError{Code: code}
	}
	if !stop() {
		c.Close()
		return nil, ctx.Err()
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
