package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
)

// bindSocketBuffer is the requested SO_RCVBUF/SO_SNDBUF. Bursts of a whole TCP window arrive at
// once, so a small buffer turns into tunnel packet loss. The kernel caps it at
// net.core.{r,w}mem_max, except on Linux for a process allowed CAP_NET_ADMIN (setSocketBuffers).
const bindSocketBuffer = 7 << 20

// Bind is a conn.Bind with a single UDP socket on one address (IPv4 or IPv6),
// unlike conn.NewDefaultBind which listens on every interface. On Linux it
// moves datagrams in batches with recvmmsg/sendmmsg, without allocating per
// datagram on 64-bit Linux.
type Bind struct {
	addr netip.Addr // immutable; the address to listen on

	// mu guards the fields below.
	mu sync.Mutex
	// udp and pc are the open socket and its batch wrapper; both nil
	// while closed.
	udp *net.UDPConn
	pc  batchConn
	// gso sends with UDP segmentation offload (64-bit Linux that has it); nil otherwise.
	gso *gsoWriter
	// port is the bound port while open, 0 while closed.
	port uint16

	// sendMsgs pools *[]ipv4.Message of length batchSize for Send, which
	// wireguard-go calls from several goroutines.
	sendMsgs sync.Pool
}

var _ conn.Bind = (*Bind)(nil)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// NewBind returns a closed Bind for addr; wireguard-go opens it.
func NewBind(addr netip.Addr) *Bind {
	b := &Bind{addr: addr.Unmap()}
	b.sendMsgs.New = func() any {
		ms := make([]ipv4.Message, batchSize)
		for i := range ms {
			ms[i].Buffers = make(net.Buffers, 1)
		}
		return &ms
	}
	return b
}

// Endpoint is the conn.Endpoint of Bind: a destination address and port.
type Endpoint struct {
	netip.AddrPort              // immutable
	udp            *net.UDPAddr // immutable; AddrPort for the socket API
}

var _ conn.Endpoint = (*Endpoint)(nil)

func newEndpoint(ap netip.AddrPort) *Endpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return &Endpoint{AddrPort: ap, udp: net.UDPAddrFromAddrPort(ap)}
}

// ClearSrc implements conn.Endpoint; the source is always the bind address.
func (*Endpoint) ClearSrc() {}

// SrcToString implements conn.Endpoint.
func (*Endpoint) SrcToString() string { return "" }

// DstToString implements conn.Endpoint.
func (e *Endpoint) DstToString() string { return e.AddrPort.String() }

// DstToBytes implements conn.Endpoint (used for cookie MACs).
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.AddrPort.MarshalBinary()
	return b
}

// DstIP implements conn.Endpoint.
func (e *Endpoint) DstIP() netip.Addr { return e.AddrPort.Addr() }

// SrcIP implements conn.Endpoint; unknown.
func (*Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// LocalAddrPort returns the bound address and port; valid after Open.
func (b *Bind) LocalAddrPort() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return netip.AddrPortFrom(b.addr, b.port)
}

// Open implements conn.Bind: it binds one UDP socket on the bind's address
// and port (0 picks a free one). It may be called again after Close.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.udp != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	network := "udp4"
	if b.addr.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.addr, port)))
	if err != nil {
		return nil, 0, fmt.Errorf("netstack: bind %v:%d: %w", b.addr, port, err)
	}
	setSocketBuffers(c, bindSocketBuffer)
	var pc batchConn
	if runtime.GOOS == "linux" || runtime.GOOS == "android" {
		if b.addr.Is6() {
			pc = ipv6.NewPacketConn(c)
		} else {
			pc = ipv4.NewPacketConn(c)
		}
	}
	var gso *gsoWriter
	if pc != nil && supportsGSO(c) {
		gso = newGSOWriter(c)
	}
	b.udp, b.pc, b.gso = c, pc, gso
	b.port = c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	return []conn.ReceiveFunc{newReceiver(c, pc).receive}, b.port, nil
}

// receiver is the state of one ReceiveFunc; wireguard-go calls it from a
// single goroutine.
type receiver struct {
	udp      *net.UDPConn     // immutable
	gro      *groReader       // immutable; nil where UDP_GRO is not available
	mm       *mmsgReader      // immutable; nil where raw recvmmsg is not implemented (or gro is set)
	from     []netip.AddrPort // len batchSize; gro's or mm's sender scratch
	pc       batchConn        // immutable; nil where batching is unsupported
	msgs     []ipv4.Message   // len batchSize, each with one buffer slot (pc only)
	last     *Endpoint        // most recent sender, reused while it repeats
	deadline time.Time        // the socket's read deadline; zero when none is set (idleRead)
}

func newReceiver(c *net.UDPConn, pc batchConn) *receiver {
	r := &receiver{udp: c}
	if pc == nil {
		return r
	}
	if enableGRO(c) {
		if r.gro = newGROReader(c); r.gro != nil {
			r.from = make([]netip.AddrPort, batchSize)
			return r
		}
	}
	if r.mm = newMMsgReader(c); r.mm != nil {
		r.from = make([]netip.AddrPort, batchSize)
		return r
	}
	r.pc = pc
	r.msgs = make([]ipv4.Message, batchSize)
	for i := range r.msgs {
		r.msgs[i].Buffers = make(net.Buffers, 1)
	}
	return r
}

// receive implements conn.ReceiveFunc. Handed more than heldFloor buffers, it waits at most about
// idleRead and then returns 0 datagrams (see idleRead).
func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if err := r.boundIdle(len(bufs) > heldFloor); err != nil {
		return 0, recvError(err)
	}
	if r.gro != nil || r.mm != nil {
		var n int
		var err error
		if r.gro != nil {
			n, err = r.gro.read(bufs, sizes, r.from)
		} else {
			n, err = r.mm.read(bufs, sizes, r.from)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		if err != nil {
			return 0, recvError(err)
		}
		for i := range n {
			eps[i] = r.endpoint(r.from[i])
		}
		return n, nil
	}
	if r.pc == nil || len(bufs) == 1 {
		n, ap, err := r.udp.ReadFromUDPAddrPort(bufs[0])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		if err != nil {
			return 0, recvError(err)
		}
		sizes[0] = n
		eps[0] = r.endpoint(ap)
		return 1, nil
	}
	k := min(len(bufs), len(r.msgs))
	for i := range k {
		r.msgs[i].Buffers[0] = bufs[i]
		r.msgs[i].N = 0
		r.msgs[i].Addr = nil
	}
	n, err := r.pc.ReadBatch(r.msgs[:k], 0)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if err != nil {
		return 0, recvError(err)
	}
	for i := range n {
		m := &r.msgs[i]
		sizes[i] = m.N
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			sizes[i] = 0
			eps[i] = nil
			continue
		}
		eps[i] = r.endpoint(ua.AddrPort())
		m.Buffers[0] = nil
		m.Addr = nil
	}
	return n, nil
}

// boundIdle keeps the socket's read deadline 1.5 to 2 s (idleRead) ahead while bounded, moving it
// at most every half second rather than at each read, and removes it otherwise.
func (r *receiver) boundIdle(bounded bool) error {
	if !bounded {
		if r.deadline.IsZero() {
			return nil
		}
		r.deadline = time.Time{}
		return r.udp.SetReadDeadline(r.deadline)
	}
	now := time.Now()
	if !r.deadline.IsZero() && r.deadline.Sub(now) >= idleRead-idleRead/4 {
		return nil
	}
	r.deadline = now.Add(idleRead)
	return r.udp.SetReadDeadline(r.deadline)
}

// endpoint returns an Endpoint for ap, reusing the previous one when the
// sender repeats (the common case: one peer per bind).
func (r *receiver) endpoint(ap netip.AddrPort) *Endpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if r.last == nil || r.last.AddrPort != ap {
		r.last = newEndpoint(ap)
	}
	return r.last
}

// recvError maps a closed socket to net.ErrClosed as conn.Bind requires.
func recvError(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return fmt.Errorf("netstack: bind receive: %w", err)
}

// Close implements conn.Bind; receive functions then return net.ErrClosed.
// Idempotent.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.udp == nil {
		return nil
	}
	err := b.udp.Close()
	b.udp, b.pc, b.gso, b.port = nil, nil, nil, 0
	if err != nil {
		return fmt.Errorf("netstack: bind close: %w", err)
	}
	return nil
}

// SetMark implements conn.Bind; marks are not supported and ignored.
func (*Bind) SetMark(uint32) error { return nil }

// BatchSize implements conn.Bind.
func (*Bind) BatchSize() int { return batchSize }

// ParseEndpoint implements conn.Bind for "ip:port" strings.
func (*Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("netstack: parse endpoint: %w", err)
	}
	return newEndpoint(ap), nil
}

// Send implements conn.Bind: it writes every buffer as one datagram to ep.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	c, pc, gso := b.udp, b.pc, b.gso
	b.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	if e.Addr().Is6() != b.addr.Is6() {
		return fmt.Errorf("netstack: send to %v from %v: %w", e.AddrPort, b.addr, syscall.EAFNOSUPPORT)
	}
	if gso != nil {
		if err := gso.send(bufs, e.AddrPort); err != nil {
			return fmt.Errorf("netstack: bind send: %w", err)
		}
		return nil
	}
	if pc == nil || len(bufs) == 1 {
		for _, buf := range bufs {
			if _, err := c.WriteToUDPAddrPort(buf, e.AddrPort); err != nil {
				return fmt.Errorf("netstack: bind send: %w", err)
			}
		}
		return nil
	}
	msp := b.sendMsgs.Get().(*[]ipv4.Message)
	defer b.sendMsgs.Put(msp)
	ms := *msp
	for len(bufs) > 0 {
		k := min(len(bufs), len(ms))
		for i := range k {
			ms[i].Buffers[0] = bufs[i]
			ms[i].Addr = e.udp
		}
		sent := 0
		for sent < k {
			n, err := pc.WriteBatch(ms[sent:k], 0)
			if err != nil {
				clearMsgs(ms[:k])
				return fmt.Errorf("netstack: bind send: %w", err)
			}
			sent += n
		}
		clearMsgs(ms[:k])
		bufs = bufs[k:]
	}
	return nil
}

func clearMsgs(ms []ipv4.Message) {
	for i := range ms {
		ms[i].Buffers[0] = nil
		ms[i].Addr = nil
	}
}
