// Package netstack runs a userspace gVisor TCP/IP stack as the tun.Device of a wireguard-go device.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/warren-tunnel/warren/third_party/wireguard/device"
	"github.com/warren-tunnel/warren/third_party/wireguard/tun"
)

// DefaultMTU is the tunnel MTU used when Config.MTU is 0.
const DefaultMTU = 1420

// MaxMTU is the largest MTU a stack accepts: the carried wireguard-go's message buffers hold a
// packet of this size with WireGuard's header, padding and tag (device.MaxMessageSize).
const MaxMTU = 9000

// nicID is the stack's only NIC.
const nicID tcpip.NICID = 1

// batchSize is what BatchSize reports: the most packets one Read or Write
// moves. Stock wireguard-go holds one 64 KiB buffer per batch slot for the TUN
// reader and per slot for each bind receive function (with Bind, also
// batchSize: 2*batchSize*64 KiB = 8 MiB per device); the copy Warren carries
// (third_party/wireguard) holds buffers only for the slots recent reads used,
// so this is the ceiling a busy device grows to, not what an idle one holds.
// In BenchmarkNetstackBaseline 32 was ~10% slower and 96 or 128 no faster
// than 64.
const batchSize = 64

// idleRead and heldFloor let an idle device give back the buffers of its last burst. The device's
// adaptive batch (third_party/wireguard/device/warren_batch.go) keeps a buffer for each slot its
// recent reads used, and gives back all but two (its minimum) only at a read that comes after a
// second of quiet. A device that nothing reaches after a burst, such as an exit whose clients have
// all gone, would otherwise keep up to batchSize buffers (9 KiB each) in its TUN reader and as many
// in its bind's receive loop for good. So a read that was handed more than heldFloor buffers waits
// at most idleRead (longer than that second) for a packet and then returns none: the loop shrinks
// its batch and reads again with two buffers, and waits as long as it takes. An idle device thus
// wakes once after a burst, never periodically.
const (
	idleRead  = 2 * time.Second
	heldFloor = device.MinActiveSlots // the device's smallest batch: a read of more is a burst's
)

// TCP tuning; see tuneTCP.
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 4 << 20
	// fwdRcvWnd is the receive window of flows accepted by the forwarder
	// before auto-tuning takes over.
	fwdRcvWnd = 1 << 20
	// fwdMaxInFlight bounds the SYNs waiting for Accept/Reject, across all of an exit's sessions,
	// and fwdMaxInFlightPerSource those of one source address (one session or static peer).
	// Since direct flows, every connection of a Warren client to an address waits here while the
	// exit dials, up to connect_timeout for a silent destination. One source's share is twice the
	// default max_connections_per_session, and the whole bound 32 shares, so that a client that
	// dials silent destinations from all of its sessions (16 by default) does not make the other
	// clients' SYNs wait for a resend; the memory held is that of the SYNs (some 100 MiB at
	// worst). A SYN past either bound is ignored, not reset (the peer sends it again), and
	// counted (TCPStats.ForwarderDrops).
	fwdMaxInFlight          = 32 * fwdMaxInFlightPerSource
	fwdMaxInFlightPerSource = 2048
	// tcpTimeWait bounds TIME_WAIT and FIN_WAIT_2 (gVisor: 60 s each). Inside a tunnel every
	// session has addresses and keys of its own, so a late segment of an old connection cannot
	// reach a new one from another session; an exit's stack, which outlives its sessions, would
	// otherwise keep every closed flow's endpoint, port reservation and timers for a minute.
	tcpTimeWait = 5 * time.Second
)

// Config configures New.
type Config struct {
	Addresses []netip.Addr // the stack's own tunnel addresses; at least one (IPv4 and/or IPv6)
	MTU       int          // 0 means DefaultMTU
	// Handler, when set, turns on the exit role: the NIC is promiscuous and spoofing, so packets
	// for any destination address are accepted, and each new TCP or UDP flow that does not match a
	// local listener is handed to Handler. nil for the client role.
	Handler FlowHandler
	// AllowLoopback lets packets whose destination is in 127.0.0.0/8 or ::1 in from the tunnel
	// (gVisor drops them by default: ipv4.Options.AllowExternalLoopbackTraffic). On the exit it
	// admits such destinations; the egress policy decides separately whether they may be dialed.
	// On a client it admits the replies (their source is loopback), so a client that dials the
	// exit's 127.0.0.1 needs it too.
	AllowLoopback bool
}

// Stack is a gVisor network stack whose single NIC is a wireguard-go tun.Device.
type Stack struct {
	stack  *stack.Stack   // immutable after New
	link   *linkEndpoint  // immutable after New
	mtu    int            // immutable after New
	events chan tun.Event // holds EventUp until read; closed by Close
	flows  *flowTable     // nil in the client role; immutable after New
	own    []netip.Addr   // the stack's own addresses (Config.Addresses, unmapped); immutable after New

	closeOnce sync.Once
}

var _ tun.Device = (*Stack)(nil)

// New builds a stack with the given addresses on NIC 1 and default routes
// through it.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("netstack: no addresses")
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 1280 || mtu > MaxMTU {
		return nil, fmt.Errorf("netstack: MTU %d out of range [1280, %d]", mtu, MaxMTU)
	}
	st := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
		// HandleLocal loops traffic to the stack's own addresses internally.
		// It must be off in the exit role: with a promiscuous NIC every
		// source address counts as "own", and gVisor then drops every
		// inbound packet as a spoofed local source.
		HandleLocal: cfg.Handler == nil,
		Stats:       sharedStats(), // the process-wide TCP counters (stats.go)
	})
	s := &Stack{
		stack:  st,
		link:   newLinkEndpoint(mtu),
		mtu:    mtu,
		events: make(chan tun.Event, 1),
	}
	for _, a := range cfg.Addresses {
		s.own = append(s.own, a.Unmap())
	}
	if err := s.setup(cfg); err != nil {
		s.link.close()
		st.Close()
		st.Wait()
		return nil, err
	}
	s.events <- tun.EventUp
	liveStacks.Add(1)
	return s, nil
}

// Owns reports whether a is one of the stack's own addresses.
func (s *Stack) Owns(a netip.Addr) bool { return slices.Contains(s.own, a.Unmap()) }

// liveStacks counts stacks made by New and not yet closed.
var liveStacks atomic.Int64

// LiveStacks returns how many stacks are open in this process: each WireGuard device Warren runs has
// one, so a count that does not return to its starting level shows an orphaned device.
func LiveStacks() int64 { return liveStacks.Load() }

func (s *Stack) setup(cfg Config) error {
	if err := tuneTCP(s.stack); err != nil {
		return err
	}
	if err := s.stack.CreateNICWithOptions(nicID, s.link, stack.NICOptions{QDisc: qdisc{s.link}}); err != nil {
		return fmt.Errorf("netstack: create NIC: %w", tcpipError(err))
	}
	var has4, has6 bool
	for _, a := range cfg.Addresses {
		a = a.Unmap()
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			has6 = true
		} else if a.Is4() {
			has4 = true
		} else {
			return fmt.Errorf("netstack: invalid address %v", a)
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %v: %w", a, tcpipError(err))
		}
	}
	exit := cfg.Handler != nil
	if has4 || exit {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if has6 || exit {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	if !exit {
		return nil
	}
	if err := s.stack.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: promiscuous mode: %w", tcpipError(err))
	}
	if err := s.stack.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: spoofing: %w", tcpipError(err))
	}
	s.flows = newFlowTable(cfg.Handler)
	tf := tcp.NewForwarder(s.stack, fwdRcvWnd, fwdMaxInFlight, s.flows.handleTCP)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s.stack, s.flows.handleUDPRequest)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, s.flows.udpPacketFilter(uf.HandlePacket))
	return nil
}

// tuneTCP sets the stack-wide TCP options. SACK lets loss recovery resend only
// what was lost. Receive-buffer moderation (auto-tuning) with a 1 MiB default
// and a 4 MiB cap lets one flow open the window it needs without promising
// every idle connection that much (gVisor buffers are limits, not
// reservations); turning moderation off cost ~20% in
// BenchmarkNetstackBaseline, 4 MiB defaults or a 16 MiB cap gained nothing
// measurable. The cap was 8 MiB until the link stopped dropping (issue 17):
// without loss, windows grow to the cap, and sixteen downloads to a slow reader
// then held 16 × 8 MiB in the client's receive buffers (peak RSS 250–380 MiB
// in BenchmarkSixteenStreams; 211–231 MiB, and faster, with 4 MiB). 4 MiB
// still covers a 300 Mbit/s path with 100 ms of round trip. Cubic measured the
// same as reno on loopback and copes better with real long paths.
func tuneTCP(st *stack.Stack) error {
	opts := []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPSACKEnabled(true)),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		ptr(tcpip.CongestionControlOption("cubic")),
		// RACK loss detection off: at this gVisor it stalls streams under random loss (3% each way
		// froze a download for minutes in 3 of 4 runs of test.TestLossyPathStaysUp; 6 of 6 passed
		// without it) — google/gvisor#6113; Tailscale disables it too (tailscale#14896). Classic
		// SACK recovery remains. Revisit when the pinned gVisor includes google/gvisor#13680.
		ptr(tcpip.TCPRecovery(0)),
		ptr(tcpip.TCPTimeWaitTimeoutOption(tcpTimeWait)),
		ptr(tcpip.TCPLingerTimeoutOption(tcpTimeWait)),
	}
	for _, o := range opts {
		if err := st.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("netstack: TCP option %T: %w", o, tcpipError(err))
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// File implements tun.Device; there is no file descriptor.
func (s *Stack) File() *os.File { return nil }

// Name implements tun.Device.
func (s *Stack) Name() (string, error) { return "warren-netstack", nil }

// MTU implements tun.Device.
func (s *Stack) MTU() (int, error) { return s.mtu, nil }

// Events implements tun.Device; it yields EventUp once and is closed by Close. Warren's own
// devices do not read it (device.DeviceOptions.NoTUNEvents): their actor calls Up itself.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// BatchSize implements tun.Device.
func (s *Stack) BatchSize() int { return batchSize }

// Read implements tun.Device: it blocks until the stack has sent at least one
// packet and returns as many queued packets as fit in bufs. Handed more than
// two buffers, it returns no packet after idleRead of quiet.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return s.link.read(bufs, sizes, offset)
}

// Write implements tun.Device: it injects the batch of IP packets into the stack.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	if err := s.link.inject(bufs, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// Close implements tun.Device. It drops flows still waiting for a decision,
// aborts every endpoint and handshake, waits for the stack's goroutines and
// for running flow handlers, and closes Events. Afterwards Read and Write
// return os.ErrClosed. Idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		defer liveStacks.Add(-1)
		if s.flows != nil {
			s.flows.close()
		}
		s.link.close()
		s.link.waitInject()
		s.stack.Close()
		if s.flows != nil {
			s.flows.abortAccepts()
		}
		s.stack.Wait()
		if s.flows != nil {
			s.flows.wait()
		}
		close(s.events)
	})
	return nil
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa, proto
}

// DialContext opens a TCP ("tcp", "tcp4", "tcp6") or UDP ("udp", "udp4",
// "udp6") connection through the stack. TCP conns are *TCPConn (with
// CloseRead/CloseWrite/Abort); UDP conns are connected *gonet.UDPConn.
func (s *Stack) DialContext(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	if !addr.IsValid() || addr.Addr().IsUnspecified() || addr.Port() == 0 {
		return nil, fmt.Errorf("netstack: dial %s %v: invalid address", network, addr)
	}
	fa, proto := fullAddr(addr)
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, _, err := s.dialTCP(ctx, fa, proto)
		if err != nil { // a nil *TCPConn must not become a non-nil net.Conn
			return nil, err
		}
		return c, nil
	case "udp", "udp4", "udp6":
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("netstack: dial udp %v: %w", addr, err)
		}
		c, err := gonet.DialUDP(s.stack, nil, &fa, proto)
		if err != nil {
			return nil, fmt.Errorf("netstack: dial udp %v: %w", addr, err)
		}
		return c, nil
	default:
		return nil, fmt.Errorf("netstack: dial: unsupported network %q", network)
	}
}

// dialTCP is gonet.DialContextTCP with errors that wrap syscall errnos, so
// callers can test errors.Is(err, syscall.ECONNREFUSED). It also returns the
// local port the attempt used (0 if it never started), failed or not.
func (s *Stack) dialTCP(ctx context.Context, fa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (*TCPConn, uint16, error) {
	opErr := func(err error) error {
		return fmt.Errorf("netstack: %w", &net.OpError{Op: "dial", Net: "tcp", Addr: fullToTCPAddr(fa), Err: err})
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, opErr(err)
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, 0, opErr(tcpipError(terr))
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(fa)
	var local uint16
	if la, err := ep.GetLocalAddress(); err == nil { // bound by Connect
		local = la.Port
	}
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, local, opErr(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, local, opErr(tcpipError(terr))
	}
	return newTCPConn(&wq, ep), local, nil
}

func fullToTCPAddr(fa tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(fa.Addr.AsSlice()), Port: int(fa.Port)}
}

// tcpipError converts a gVisor error to a syscall.Errno where one fits.
func tcpipError(err tcpip.Error) error {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive, *tcpip.ErrInvalidEndpointState:
		return net.ErrClosed
	default:
		return errors.New(err.String())
	}
}

// ListenTCP listens on addr (an address of the stack, or unspecified for all).
// Accepted conns are *TCPConn.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(addr)
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: listen tcp %v: %w", addr, tcpipError(terr))
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: listen tcp %v: %w", addr, tcpipError(terr))
	}
	if terr := ep.Listen(1024); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: listen tcp %v: %w", addr, tcpipError(terr))
	}
	return &tcpListener{ep: ep, wq: &wq, addr: fullToTCPAddr(fa), cancel: make(chan struct{})}, nil
}

// ListenUDP binds a UDP socket on addr; the result is a *gonet.UDPConn.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	fa, proto := fullAddr(addr)
	c, err := gonet.DialUDP(s.stack, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen udp %v: %w", addr, err)
	}
	return c, nil
}
