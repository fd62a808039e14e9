package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/warren-tunnel/warren/messages"
)

// A SOCKS5 UDP association's tunnel half is a connect-protocol request with ConnectCmdUDP and a
// pair of UDP sockets on the two stacks:
//
//	request: 'W' 1 ConnectCmdUDP 0 port[2]   port: the client's UDP socket on its tunnel address
//	reply:   'W' 1 code [port[2]]            port (when code is 0): the exit's UDP socket for it
//	then, exit → client, until either side closes: notices  code hostlen host[hostlen] port[2]
//
// The TCP connection is the association's control channel and lives as long as it: the client
// closes it when its SOCKS5 control connection ends; the exit closes it when its half ends (idle
// timeout, session closed). Datagrams travel between the two UDP sockets, which are connected to
// each other, so each accepts only the other's: every datagram is a SOCKS5 UDP request header
// (RSV RSV FRAG ATYP DST.ADDR DST.PORT, RFC 1928 §7) and the payload, unchanged from what the
// proxy client sent; the exit answers with the same header naming the source. A notice says why
// the exit dropped datagrams to a destination (policy_denied, unresolvable, limit), once per
// destination.

// ConnectCmdUDP opens a UDP association (see above).
const ConnectCmdUDP = 3

// udpSocketBuffer is an association socket's receive and send buffer on the netstack; gVisor
// charges it only as datagrams queue.
const udpSocketBuffer = 1 << 20

// UDPSocket is a UDP socket on a stack, bound first and connected later: the association's side
// learns its port before it can name its peer's. Read and Write move one datagram each without
// allocating (gonet's UDPConn allocates per datagram); one reader and one writer may run at once.
// Close unblocks them. It has no deadlines: its owner closes it.
type UDPSocket struct {
	ep   tcpip.Endpoint // alive until Close
	wq   *waiter.Queue
	port uint16 // bound port

	// readable and writable are notified by the endpoint (registered for the socket's life);
	// closed is closed by Close.
	readEntry, writeEntry waiter.Entry
	readable, writable    chan struct{}
	closed                chan struct{}
	closeOnce             sync.Once

	rw tcpip.SliceWriter // the reader's, reused per Read
	wr bytes.Reader      // the writer's, reused per Write
}

// BindUDP binds a UDP socket on addr (an address of the stack, or unspecified; port 0 picks one).
// Connect it before reading or writing.
func (s *Stack) BindUDP(addr netip.AddrPort) (*UDPSocket, error) {
	fa, proto := fullAddr(addr)
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: bind udp %v: %w", addr, tcpipError(terr))
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: bind udp %v: %w", addr, tcpipError(terr))
	}
	local, terr := ep.GetLocalAddress()
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: bind udp %v: %w", addr, tcpipError(terr))
	}
	// As the host sockets (proxy.UDPSocketBuffer): a burst must not overflow the default.
	ep.SocketOptions().SetReceiveBufferSize(udpSocketBuffer, true)
	ep.SocketOptions().SetSendBufferSize(udpSocketBuffer, true)
	u := &UDPSocket{ep: ep, wq: &wq, port: local.Port, closed: make(chan struct{})}
	u.readEntry, u.readable = waiter.NewChannelEntry(waiter.ReadableEvents)
	u.writeEntry, u.writable = waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&u.readEntry)
	wq.EventRegister(&u.writeEntry)
	return u, nil
}

// Port is the socket's bound port.
func (u *UDPSocket) Port() uint16 { return u.port }

// Connect fixes the socket's peer: it then sends there and receives only from there.
func (u *UDPSocket) Connect(peer netip.AddrPort) error {
	fa, _ := fullAddr(peer)
	if terr := u.ep.Connect(fa); terr != nil {
		return fmt.Errorf("netstack: connect udp %v: %w", peer, tcpipError(terr))
	}
	return nil
}

// Read reads one datagram into b (a longer one is cut to len(b)); net.ErrClosed once closed.
func (u *UDPSocket) Read(b []byte) (int, error) {
	for {
		u.rw = b
		res, terr := u.ep.Read(&u.rw, tcpip.ReadOptions{})
		u.rw = nil
		if terr == nil {
			return res.Count, nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return 0, udpError("read", terr)
		}
		select {
		case <-u.readable:
		case <-u.closed:
			return 0, net.ErrClosed
		}
	}
}

// Write sends b as one datagram to the connected peer; net.ErrClosed once closed.
func (u *UDPSocket) Write(b []byte) (int, error) {
	for {
		u.wr.Reset(b)
		n, terr := u.ep.Write(&u.wr, tcpip.WriteOptions{})
		if terr == nil {
			return int(n), nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return 0, udpError("write", terr)
		}
		select {
		case <-u.writable:
		case <-u.closed:
			return 0, net.ErrClosed
		}
	}
}

// Close releases the endpoint and unblocks Read and Write; idempotent.
func (u *UDPSocket) Close() error {
	u.closeOnce.Do(func() {
		close(u.closed)
		u.wq.EventUnregister(&u.readEntry)
		u.wq.EventUnregister(&u.writeEntry)
		u.ep.Close()
	})
	return nil
}

func udpError(op string, terr tcpip.Error) error {
	switch terr.(type) {
	case *tcpip.ErrClosedForReceive, *tcpip.ErrClosedForSend, *tcpip.ErrInvalidEndpointState:
		return net.ErrClosed
	}
	return fmt.Errorf("netstack: udp %s: %w", op, tcpipError(terr))
}

// UDPAssociation is the client's half of an association's tunnel side: the control connection to
// the exit and the UDP socket whose datagrams the exit relays.
type UDPAssociation struct {
	Control net.Conn   // the control channel; closing it ends the association on the exit
	Conn    *UDPSocket // connected to the exit's socket for this association
}

// Close releases both.
func (a *UDPAssociation) Close() error {
	err := a.Control.Close()
	if cerr := a.Conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// AssociateUDP opens a UDP association with the exit: a client UDP socket on the stack's address,
// and a control connection to the exit's connect service that asks for its exit half. A refusal by
// the exit is a *DialError with its code.
func (d Dialer) AssociateUDP(ctx context.Context) (*UDPAssociation, error) {
	if d.Stack == nil {
		return nil, &DialError{Code: messages.ReplyNetworkUnreachable, Err: errors.New("no tunnel device")}
	}
	any := netip.IPv4Unspecified()
	if d.Service.Addr().Is6() && !d.Service.Addr().Is4In6() {
		any = netip.IPv6Unspecified()
	}
	sock, err := d.Stack.BindUDP(netip.AddrPortFrom(any, 0))
	if err != nil {
		return nil, &DialError{Code: messages.ReplyGeneralFailure, Err: err}
	}
	c, err := d.Stack.DialContext(ctx, "tcp", d.Service)
	if err != nil {
		sock.Close()
		return nil, &DialError{Code: ReplyCodeForDial(err), Err: fmt.Errorf("reach exit connect service %s: %w", d.Service, err)}
	}
	fail := func(code messages.ReplyCode, err error) (*UDPAssociation, error) {
		c.Close()
		sock.Close()
		return nil, &DialError{Code: code, Err: err}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeConnectRequest(c, ConnectRequest{Cmd: ConnectCmdUDP, Port: sock.Port()}); err != nil {
		return fail(ReplyCodeForDial(err), fmt.Errorf("udp association request: %w", err))
	}
	code, err := readConnectReply(c)
	if err != nil {
		return fail(ReplyCodeForDial(err), fmt.Errorf("udp association: %w", err))
	}
	if code != messages.ReplySucceeded {
		return fail(code, fmt.Errorf("udp association refused by exit: reply %d", code))
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return fail(messages.ReplyGeneralFailure, fmt.Errorf("udp association reply: %w", err))
	}
	if !stop() {
		return fail(ReplyCodeForDial(ctx.Err()), fmt.Errorf("udp association: %w", ctx.Err()))
	}
	_ = c.SetDeadline(time.Time{})
	if err := sock.Connect(netip.AddrPortFrom(d.Service.Addr(), binary.BigEndian.Uint16(port[:]))); err != nil {
		return fail(messages.ReplyGeneralFailure, err)
	}
	return &UDPAssociation{Control: c, Conn: sock}, nil
}

// AcceptUDP is the exit's answer to a ConnectCmdUDP request read from control (a connect-service
// connection from peer's tunnel address): a UDP socket on local (the exit's tunnel address)
// connected to the client's socket, and the reply naming it.
func (s *Stack) AcceptUDP(control net.Conn, local netip.Addr, clientPort uint16) (*UDPSocket, error) {
	remote, err := netip.ParseAddrPort(control.RemoteAddr().String())
	if err != nil || clientPort == 0 {
		_ = WriteConnectReply(control, messages.ReplyGeneralFailure)
		return nil, fmt.Errorf("%w: udp association from %v port %d", ErrBadConnectRequest, control.RemoteAddr(), clientPort)
	}
	sock, err := s.BindUDP(netip.AddrPortFrom(local, 0))
	if err == nil {
		err = sock.Connect(netip.AddrPortFrom(remote.Addr().Unmap(), clientPort))
		if err != nil {
			sock.Close()
		}
	}
	if err != nil {
		_ = WriteConnectReply(control, messages.ReplyGeneralFailure)
		return nil, err
	}
	rep := []byte{connectMagic, connectVersion, byte(messages.ReplySucceeded), 0, 0}
	binary.BigEndian.PutUint16(rep[3:], sock.Port())
	if _, err := control.Write(rep); err != nil {
		sock.Close()
		return nil, fmt.Errorf("udp association reply: %w", err)
	}
	return sock, nil
}

// UDPNotice is what an exit tells a client about datagrams it dropped: to Host:Port, for Code.
type UDPNotice struct {
	Code messages.ReplyCode // ReplyNotAllowed (egress policy), ReplyHostUnreachable (unresolvable), ReplyGeneralFailure (limit)
	Host string             // as the client named it: an IP literal or a name
	Port uint16
}

// maxNotice bounds a notice on the wire: code, length, host, port.
const maxNotice = 1 + 1 + 255 + 2

// ErrBadNotice: a notice with a code no exit sends, or an empty or oversized host.
var ErrBadNotice = errors.New("bad udp notice")

// WriteUDPNotice writes one notice on an association's control channel.
func WriteUDPNotice(w io.Writer, n UDPNotice) error {
	if n.Host == "" || len(n.Host) > maxConnectHost {
		return fmt.Errorf("%w: host %q", ErrBadNotice, n.Host)
	}
	var b [maxNotice]byte
	b[0], b[1] = byte(n.Code), byte(len(n.Host))
	k := 2 + copy(b[2:], n.Host)
	binary.BigEndian.PutUint16(b[k:], n.Port)
	_, err := w.Write(b[:k+2])
	return err
}

// ReadUDPNotice reads the next notice into buf (reused by the caller: nothing is allocated; Host
// is left empty) and returns its code; io.EOF when the exit closed the control channel, and
// ErrBadNotice for a code no exit sends or an empty host.
func ReadUDPNotice(r io.Reader, buf *[maxNotice]byte) (UDPNotice, error) {
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return UDPNotice{}, err
	}
	n := UDPNotice{Code: messages.ReplyCode(buf[0])}
	hl := int(buf[1])
	if _, err := io.ReadFull(r, buf[2:2+hl+2]); err != nil {
		return UDPNotice{}, fmt.Errorf("udp notice: %w", truncatedEOF(err))
	}
	n.Port = binary.BigEndian.Uint16(buf[2+hl:])
	switch {
	case hl == 0:
		return n, fmt.Errorf("%w: empty host", ErrBadNotice)
	case n.Code != messages.ReplyNotAllowed && n.Code != messages.ReplyHostUnreachable && n.Code != messages.ReplyGeneralFailure:
		return n, fmt.Errorf("%w: code %d", ErrBadNotice, n.Code)
	}
	return n, nil
}

// NoticeHost is the host of the notice last read into buf.
func NoticeHost(buf *[maxNotice]byte) string { return string(buf[2 : 2+int(buf[1])]) }

// NoticeBuffer is a buffer for ReadUDPNotice.
type NoticeBuffer = [maxNotice]byte

func truncatedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
