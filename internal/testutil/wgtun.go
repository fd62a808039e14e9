package testutil

// wgTun is the WireGuard server's tun.Device: a gVisor stack on a channel link endpoint, as
// wireguard-go's tun/netstack builds it, with a Close that cannot race a packet on its way out.
// (tun/netstack's Close closes the channel its WriteNotify sends on while gVisor may still be
// sending — a data race, and a panic if the send wins: seen under -race when the server closed
// right after its connections.) Still no Warren code: only gVisor and wireguard-go's tun API.

import (
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

type wgTun struct {
	ep       *channel.Endpoint
	stack    *stack.Stack
	notify   *channel.NotificationHandle
	events   chan tun.Event
	incoming chan *buffer.View
	done     chan struct{} // closed by Close: WriteNotify and Read stop waiting
	mtu      int
	once     sync.Once
}

// newWGTun builds the stack with addr on NIC 1 and a default route through it.
func newWGTun(addr netip.Addr, mtu int) (*wgTun, error) {
	t := &wgTun{
		ep: channel.New(1024, uint32(mtu), ""),
		stack: stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
			HandleLocal:        true,
		}),
		events: make(chan tun.Event, 1), incoming: make(chan *buffer.View, 256), done: make(chan struct{}), mtu: mtu,
	}
	t.notify = t.ep.AddNotify(t)
	if err := t.stack.CreateNIC(1, t.ep); err != nil {
		return nil, os.NewSyscallError("CreateNIC: "+err.String(), syscall.EINVAL)
	}
	proto, route := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber), header.IPv4EmptySubnet
	if addr.Is6() {
		proto, route = ipv6.ProtocolNumber, header.IPv6EmptySubnet
	}
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := t.stack.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		return nil, os.NewSyscallError("AddProtocolAddress: "+err.String(), syscall.EINVAL)
	}
	t.stack.AddRoute(tcpip.Route{Destination: route, NIC: 1})
	t.events <- tun.EventUp
	return t, nil
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

func (t *wgTun) File() *os.File           { return nil }
func (t *wgTun) Name() (string, error)    { return "wgserver", nil }
func (t *wgTun) MTU() (int, error)        { return t.mtu, nil }
func (t *wgTun) BatchSize() int           { return 1 }
func (t *wgTun) Events() <-chan tun.Event { return t.events }

// Read hands wireguard-go the next packet the stack sent; os.ErrClosed once closed.
func (t *wgTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case v := <-t.incoming:
		n, err := v.Read(bufs[0][offset:])
		v.Release()
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	case <-t.done:
		return 0, os.ErrClosed
	}
}

// Write injects packets from wireguard-go into the stack.
func (t *wgTun) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		switch p[0] >> 4 {
		case 4:
			t.ep.InjectInbound(header.IPv4ProtocolNumber, pkb)
		case 6:
			t.ep.InjectInbound(header.IPv6ProtocolNumber, pkb)
		default:
			pkb.DecRef()
			return 0, syscall.EAFNOSUPPORT
		}
		pkb.DecRef()
	}
	return len(bufs), nil
}

// WriteNotify is called by the link endpoint when the stack sends a packet.
func (t *wgTun) WriteNotify() {
	pkt := t.ep.Read()
	if pkt == nil {
		return
	}
	v := pkt.ToView()
	pkt.DecRef()
	select {
	case t.incoming <- v:
	case <-t.done:
		v.Release()
	}
}

// Close stops the stack and waits for its goroutines before letting go of the link; idempotent.
func (t *wgTun) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.stack.RemoveNIC(1)
		t.stack.Close()
		t.stack.Wait()
		t.ep.RemoveNotify(t.notify)
		t.ep.Close()
		close(t.events)
	})
	return nil
}
