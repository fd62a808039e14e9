package netstack

import (
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// outQueueLen is the capacity of the outbound packet ring. It only holds
// references to packets the TCP sender already buffers, so a generous size
// costs little memory and avoids tail drops when a large window is released.
const outQueueLen = 4096

// fullWait bounds how long a writer waits for room in a full ring before it drops what does not
// fit; the bound starts again whenever the writer finds room. The device's reader takes up to
// batchSize packets at a time, so while it runs, room comes within a read; only a device that has
// stopped reading (being closed), or one starved of CPU for that long, lets the bound expire.
// Waiting rather than dropping is what keeps many TCP streams at once out of loss recovery: their
// windows together outgrow any fixed queue, and a dropped packet is a retransmission and a halved
// window, while a wait only holds the sender back as a slower NIC would.
const fullWait = 50 * time.Millisecond

// groFlushRounds bounds the gro.GRO.Flush calls after each inbound batch.
// gVisor's Flush hands up only the first packet of each bucket per call (the
// list cursor is reset while iterating), and a bucket holds at most 8 packets,
// so 8 rounds are guaranteed to empty it.
const groFlushRounds = 8

// linkEndpoint is the stack's only NIC. Outbound packets written by gVisor are
// queued in a ring and copied out in batches by Read; inbound packets from
// Write are coalesced by GRO and delivered synchronously.
type linkEndpoint struct {
	mtu uint32 // immutable

	// mu guards the fields below it.
	mu sync.Mutex
	// ring holds outbound packets at indexes head, head+1, ... (mod len)
	// for count entries; each held entry owns one reference.
	ring  []*stack.PacketBuffer
	head  int
	count int
	// closed is set once by close; afterwards the ring stays empty and
	// WritePackets drops everything.
	closed bool
	// dispatcher is the stack's NIC, set by Attach (nil when detached).
	dispatcher stack.NetworkDispatcher

	// wake has capacity 1; it receives a token when the ring goes from empty
	// to non-empty. A stale token only costs read one extra loop.
	wake chan struct{}
	// done is closed by close.
	done chan struct{}
	// room is closed, and replaced, by read when it takes packets while writers wait for room in
	// the full ring (waiting > 0); waiting counts them until then (a writer whose bound expires
	// first takes itself off).
	room    chan struct{}
	waiting int
	// fullWait bounds a writer's wait for room (the constant; tests shorten or lengthen it).
	fullWait time.Duration

	// readMu serialises read; scratch is read's batch buffer (len batchSize); idle bounds the
	// wait of a read handed more than heldFloor buffers (idleRead; made by the first such wait).
	readMu  sync.Mutex
	scratch []*stack.PacketBuffer
	idle    *time.Timer

	// writeMu serialises inject, which owns gro.
	writeMu sync.Mutex
	gro     gro.GRO
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)
var _ stack.GSOEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(mtu int) *linkEndpoint {
	e := &linkEndpoint{
		mtu:      uint32(mtu),
		ring:     make([]*stack.PacketBuffer, outQueueLen),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		room:     make(chan struct{}),
		fullWait: fullWait,
		scratch:  make([]*stack.PacketBuffer, batchSize), // a Read moves at most BatchSize packets
	}
	e.gro.Init(true)
	return e
}

// read blocks until at least one outbound packet is queued, then copies up to
// len(bufs) of them into bufs[i][offset:]. It returns os.ErrClosed once the
// endpoint is closed. A packet that does not fit its buffer gets size 0. Handed
// more than heldFloor buffers, it waits at most idleRead and then returns 0
// packets (see idleRead).
func (e *linkEndpoint) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	e.readMu.Lock()
	defer e.readMu.Unlock()
	var n int
	var idle <-chan time.Time // armed at most once per call; stopped before returning (no defer: it sits in a loop, and a deferred call there allocates per packet)
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			if idle != nil {
				e.idle.Stop()
			}
			return 0, os.ErrClosed
		}
		n = min(e.count, len(bufs), len(sizes), len(e.scratch))
		for i := range n {
			e.scratch[i] = e.ring[e.head]
			e.ring[e.head] = nil
			e.head = (e.head + 1) % len(e.ring)
		}
		e.count -= n
		if n > 0 && e.waiting > 0 {
			close(e.room)
			e.room, e.waiting = make(chan struct{}), 0
		}
		e.mu.Unlock()
		if n > 0 {
			break
		}
		if idle == nil && len(bufs) > heldFloor {
			idle = e.armIdle()
		}
		select {
		case <-e.wake:
		case <-e.done:
		case <-idle:
			return 0, nil
		}
	}
	if idle != nil {
		e.idle.Stop()
	}
	for i := range n {
		pkt := e.scratch[i]
		e.scratch[i] = nil
		sizes[i] = 0
		if offset >= 0 && offset <= len(bufs[i]) {
			sizes[i] = copyPacket(bufs[i][offset:], pkt)
		}
		pkt.DecRef()
	}
	return n, nil
}

// armIdle starts the idle bound of one read (readMu held).
func (e *linkEndpoint) armIdle() <-chan time.Time {
	if e.idle == nil {
		e.idle = time.NewTimer(idleRead)
	} else {
		e.idle.Reset(idleRead)
	}
	return e.idle.C
}

// copyPacket copies the whole of pkt into dst without allocating. It returns
// 0 if pkt does not fit.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	if pkt.Size() > len(dst) {
		return 0
	}
	vl, skip := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}

// inject hands a batch of raw IP packets (each bufs[i][offset:]) to the stack.
// Packets that are not IPv4 or IPv6 are skipped.
func (e *linkEndpoint) inject(bufs [][]byte, offset int) error {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	e.mu.Lock()
	d, closed := e.dispatcher, e.closed
	e.mu.Unlock()
	if closed {
		return os.ErrClosed
	}
	if d == nil {
		return nil
	}
	e.gro.Dispatcher = d
	for _, b := range bufs {
		if offset < 0 || len(b) <= offset {
			continue
		}
		p := b[offset:]
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		e.gro.Enqueue(pkt)
		pkt.DecRef()
	}
	for range groFlushRounds {
		e.gro.Flush()
	}
	return nil
}

// waitInject returns once no inject that found the endpoint open is running;
// after close, later injects return at once.
func (e *linkEndpoint) waitInject() {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
}

// close stops the endpoint: pending and future outbound packets are dropped,
// read returns os.ErrClosed and inject does nothing. Idempotent.
func (e *linkEndpoint) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for e.count > 0 {
		e.ring[e.head].DecRef()
		e.ring[e.head] = nil
		e.head = (e.head + 1) % len(e.ring)
		e.count--
	}
	close(e.done)
	e.mu.Unlock()
}

// WritePackets implements stack.LinkWriter. A writer that finds the ring full waits for room, at
// most fullWait, and then drops what does not fit (as a full NIC queue would; TCP recovers them).
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return e.enqueue(pkts.AsSlice())
}

// enqueue appends pkts to the ring, taking a reference to each, and wakes a waiting read; when the
// ring is full it waits for room (fullWait).
func (e *linkEndpoint) enqueue(pkts []*stack.PacketBuffer) (int, tcpip.Error) {
	n := 0
	var bound *time.Timer // armed at the first wait of this call; re-armed whenever room is found
	expired := false      // bound fired with no room found since: what does not fit is dropped
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			stopTimer(bound)
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
		wasEmpty := e.count == 0
		k := 0
		for n < len(pkts) && e.count < len(e.ring) {
			e.ring[(e.head+e.count)%len(e.ring)] = pkts[n].IncRef()
			e.count++
			n++
			k++
		}
		full := n < len(pkts) && !expired
		var room chan struct{}
		if full {
			e.waiting++
			room = e.room
		}
		e.mu.Unlock()
		if wasEmpty && k > 0 {
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
		if !full {
			if n < len(pkts) {
				stackCounters.linkDrops.IncrementBy(uint64(len(pkts) - n))
			}
			stopTimer(bound)
			if n == 0 {
				return 0, &tcpip.ErrNoBufferSpace{}
			}
			return n, nil
		}
		switch {
		case bound == nil:
			bound = time.NewTimer(e.fullWait)
		case k > 0:
			bound.Reset(e.fullWait) // the reader is moving: the bound counts from its last read
		}
		select {
		case <-room:
		case <-e.done:
		case <-bound.C:
			expired = true
			e.mu.Lock()
			if e.room == room && e.waiting > 0 {
				e.waiting-- // no read since this writer counted itself
			}
			e.mu.Unlock()
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// qdisc is the NIC's queueing discipline. It puts each outbound packet
// straight into the ring; gVisor's default one wraps every packet in a
// freshly allocated PacketBufferList.
type qdisc struct{ e *linkEndpoint }

var _ stack.QueueingDiscipline = qdisc{}

// WritePacket implements stack.QueueingDiscipline.
func (q qdisc) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	one := [1]*stack.PacketBuffer{pkt}
	_, err := q.e.enqueue(one[:])
	return err
}

// Close implements stack.QueueingDiscipline; the ring is closed with the
// endpoint.
func (qdisc) Close() {}

// MTU implements stack.NetworkLinkEndpoint.
func (e *linkEndpoint) MTU() uint32 { return e.mtu }

// SetMTU implements stack.NetworkLinkEndpoint; the MTU is fixed at creation.
func (e *linkEndpoint) SetMTU(uint32) {}

// MaxHeaderLength implements stack.NetworkLinkEndpoint; there is no link header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint; an IP tunnel has none.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint. Inbound checksums are
// not verified: every packet from the tunnel was authenticated by WireGuard,
// so it cannot have been corrupted on the way, and GRO (which does not
// recompute checksums of merged packets) requires it. Outbound checksums are
// always computed, since the peer may be a kernel that checks them.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*linkEndpoint) GSOMaxSize() uint32 { return stack.GVisorGSOMaxSize }

// SupportedGSO implements stack.GSOEndpoint: TCP may hand segments of up to
// GSOMaxSize to its own software segmentation, which saves per-segment work in
// the sender; the link still only sees MTU-sized packets.
func (*linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.GVisorGSOSupported }

// Attach implements stack.NetworkLinkEndpoint.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint; the endpoint has no goroutines.
func (*linkEndpoint) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint.
func (e *linkEndpoint) Close() { e.close() }

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) SetOnCloseAction(func()) {}
