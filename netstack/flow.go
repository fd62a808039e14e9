package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpStashMax bounds the datagrams kept for a UDP flow while its handler has
// not decided yet; later ones are dropped.
const udpStashMax = 16

// ErrFlowDone is returned by Accept on a flow that was already accepted or
// rejected, or whose stack was closed.
var ErrFlowDone = errors.New("netstack: flow already decided or stack closed")

// FlowHandler receives the new flows of an exit-role stack. Stack.Close
// waits for running HandleTCP/HandleUDP calls to return, so they must not
// block on anything Close would have to end first; flows still undecided at
// Close are dropped and their Accept returns ErrFlowDone.
type FlowHandler interface {
	// HandleTCP is called for each new TCP flow (SYN) on a gVisor goroutine. It may hand f to another
	// goroutine; exactly one of f.Accept or f.Reject must eventually be called.
	HandleTCP(f *TCPFlow)
	// HandleUDP likewise for each new UDP flow (first datagram of a src/dst 4-tuple not yet seen).
	HandleUDP(f *UDPFlow)
}

// TCPFlow is a TCP connection attempt from the tunnel that no local listener
// took: Src is the peer, Dst the address it tried to reach.
type TCPFlow struct {
	Src, Dst netip.AddrPort

	table *flowTable
	// req is the pending SYN; guarded by table.mu; nil once Accept, Reject
	// or the stack's Close claimed it.
	req *tcp.ForwarderRequest
}

// UDPFlow is the first datagram of a new src/dst 4-tuple from the tunnel.
type UDPFlow struct {
	Src, Dst netip.AddrPort

	table *flowTable
	id    stack.TransportEndpointID // immutable
	// req is the first datagram; guarded by table.mu; nil once claimed.
	req *udp.ForwarderRequest
	// stash holds clones of later datagrams of the same 4-tuple that
	// arrived before the decision (at most udpStashMax, each owning one
	// reference); guarded by table.mu.
	stash []*stack.PacketBuffer
}

// flowTable tracks the exit role's undecided flows and running handlers.
type flowTable struct {
	handler FlowHandler // immutable

	// mu guards the fields below and the req/stash fields of every flow.
	mu sync.Mutex
	// closed is set once by close; no flow is registered afterwards.
	closed bool
	// tcpPending holds every TCPFlow whose req is non-nil.
	tcpPending map[*TCPFlow]struct{}
	// tcpBySource counts tcpPending's flows per source address; an address without any has no
	// entry.
	tcpBySource map[netip.Addr]int
	// udpPending holds the undecided UDPFlow of each 4-tuple; an entry
	// stays until its endpoint exists so that datagrams are stashed.
	udpPending map[stack.TransportEndpointID]*UDPFlow
	// accepting holds the waiter queue of every TCP handshake in progress
	// in createEndpoint.
	accepting map[*waiter.Queue]struct{}

	// acceptDone (capacity 1) gets a token whenever a handshake in
	// createEndpoint ends.
	acceptDone chan struct{}

	// handlers counts running HandleTCP/HandleUDP calls; Add only under mu
	// while !closed.
	handlers sync.WaitGroup
}

func newFlowTable(h FlowHandler) *flowTable {
	return &flowTable{
		handler:     h,
		tcpPending:  make(map[*TCPFlow]struct{}),
		tcpBySource: make(map[netip.Addr]int),
		udpPending:  make(map[stack.TransportEndpointID]*UDPFlow),
		accepting:   make(map[*waiter.Queue]struct{}),
		acceptDone:  make(chan struct{}, 1),
	}
}

func toAddrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}

// handleTCP is the tcp.Forwarder callback; gVisor runs it on a new goroutine.
func (t *flowTable) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	f := &TCPFlow{
		Src:   toAddrPort(id.RemoteAddress, id.RemotePort),
		Dst:   toAddrPort(id.LocalAddress, id.LocalPort),
		table: t,
		req:   r,
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		r.Complete(false)
		return
	}
	src := f.Src.Addr()
	if t.tcpBySource[src] >= fwdMaxInFlightPerSource {
		// Ignored, not reset: the peer sends the SYN again (after a second, then longer) and gets
		// in once its own flows waiting for their dial are fewer. The others' are not held up.
		t.mu.Unlock()
		stackCounters.forwarderDrops.Increment()
		r.Complete(false)
		return
	}
	t.tcpBySource[src]++
	t.tcpPending[f] = struct{}{}
	t.handlers.Add(1)
	t.mu.Unlock()
	defer t.handlers.Done()
	t.handler.HandleTCP(f)
}

// forget removes f from the pending flows; under t.mu, f.req non-nil.
func (t *flowTable) forget(f *TCPFlow) {
	delete(t.tcpPending, f)
	src := f.Src.Addr()
	if t.tcpBySource[src]--; t.tcpBySource[src] <= 0 {
		delete(t.tcpBySource, src)
	}
}

func (f *TCPFlow) take() *tcp.ForwarderRequest {
	if f.table == nil {
		return nil
	}
	f.table.mu.Lock()
	defer f.table.mu.Unlock()
	r := f.req
	if r != nil {
		f.table.forget(f)
	}
	f.req = nil
	return r
}

// Accept completes the handshake with the peer and returns the connection, a
// *TCPConn whose LocalAddr is Dst and RemoteAddr is Src.
func (f *TCPFlow) Accept() (net.Conn, error) {
	r := f.take()
	if r == nil {
		return nil, ErrFlowDone
	}
	var wq waiter.Queue
	ep, err := f.table.createEndpoint(r, &wq)
	if err != nil {
		r.Complete(true)
		return nil, fmt.Errorf("netstack: accept %v->%v: %w", f.Src, f.Dst, tcpipError(err))
	}
	r.Complete(false)
	return newTCPConn(&wq, ep), nil
}

// createEndpoint runs r's handshake, which gVisor blocks on until the peer's
// final ACK, while wq is listed in t.accepting so that Close can abort it. It
// fails at once if the table is closed.
func (t *flowTable) createEndpoint(r *tcp.ForwarderRequest, wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, &tcpip.ErrAborted{}
	}
	t.accepting[wq] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.accepting, wq)
		t.mu.Unlock()
		select {
		case t.acceptDone <- struct{}{}:
		default:
		}
	}()
	return r.CreateEndpoint(wq)
}

// acceptKick is how often abortAccepts repeats its wake-up; see there.
const acceptKick = 5 * time.Millisecond

// abortAccepts ends the handshakes of running Accept calls; it runs after the
// stack is closed. gVisor's handshake waits for an edge-triggered writable
// event on the accept's queue and then fails because the endpoint is not
// connected. stack.Close aborts (and so wakes) every registered endpoint, but
// an Accept that had not yet registered its endpoint then misses it, and a
// wake-up sent before the handshake subscribes to its queue is lost; so the
// wake-up is repeated every acceptKick until every Accept has returned. The
// loop only runs when Close races an Accept, and ends within a few rounds.
func (t *flowTable) abortAccepts() {
	for {
		t.mu.Lock()
		qs := make([]*waiter.Queue, 0, len(t.accepting))
		for q := range t.accepting {
			qs = append(qs, q)
		}
		t.mu.Unlock()
		if len(qs) == 0 {
			return
		}
		for _, q := range qs {
			q.Notify(waiter.WritableEvents)
		}
		timer := time.NewTimer(acceptKick)
		select {
		case <-t.acceptDone:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Reject answers the SYN with RST, so the peer sees "connection refused".
func (f *TCPFlow) Reject() {
	if r := f.take(); r != nil {
		r.Complete(true)
	}
}

// udpPacketFilter wraps the udp.Forwarder's packet handler: datagrams of a
// 4-tuple whose flow is still undecided are stashed instead of starting
// another flow.
func (t *flowTable) udpPacketFilter(next func(stack.TransportEndpointID, *stack.PacketBuffer) bool) func(stack.TransportEndpointID, *stack.PacketBuffer) bool {
	return func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return true
		}
		if f, ok := t.udpPending[id]; ok {
			if len(f.stash) < udpStashMax {
				f.stash = append(f.stash, pkt.Clone())
			}
			t.mu.Unlock()
			return true
		}
		t.mu.Unlock()
		return next(id, pkt)
	}
}

// handleUDPRequest is the udp.Forwarder callback, run synchronously on the
// inbound path; the user's handler runs on its own goroutine.
func (t *flowTable) handleUDPRequest(r *udp.ForwarderRequest) {
	id := r.ID()
	f := &UDPFlow{
		Src:   toAddrPort(id.RemoteAddress, id.RemotePort),
		Dst:   toAddrPort(id.LocalAddress, id.LocalPort),
		table: t,
		id:    id,
		req:   r,
	}
	t.mu.Lock()
	if _, dup := t.udpPending[id]; dup || t.closed {
		t.mu.Unlock()
		return
	}
	t.udpPending[id] = f
	t.handlers.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.handlers.Done()
		t.handler.HandleUDP(f)
	}()
}

// forget removes f from the pending table and returns its stash.
func (f *UDPFlow) forget() []*stack.PacketBuffer {
	f.table.mu.Lock()
	defer f.table.mu.Unlock()
	if f.table.udpPending[f.id] == f {
		delete(f.table.udpPending, f.id)
	}
	s := f.stash
	f.stash = nil
	return s
}

// Accept returns a connected UDP conn (*gonet.UDPConn): reads are datagrams
// from Src to Dst (starting with the first one), writes go to Src from Dst.
func (f *UDPFlow) Accept() (net.Conn, error) {
	if f.table == nil {
		return nil, ErrFlowDone
	}
	f.table.mu.Lock()
	r := f.req
	f.req = nil
	f.table.mu.Unlock()
	if r == nil {
		return nil, ErrFlowDone
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	stash := f.forget()
	if err != nil {
		for _, p := range stash {
			p.DecRef()
		}
		return nil, fmt.Errorf("netstack: accept udp %v->%v: %w", f.Src, f.Dst, tcpipError(err))
	}
	te, _ := ep.(stack.TransportEndpoint)
	for _, p := range stash {
		if te != nil {
			te.HandlePacket(f.id, p)
		}
		p.DecRef()
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// Reject drops the flow's datagrams; a later datagram of the same 4-tuple
// starts a new flow.
func (f *UDPFlow) Reject() {
	if f.table == nil {
		return
	}
	f.table.mu.Lock()
	f.req = nil
	f.table.mu.Unlock()
	for _, p := range f.forget() {
		p.DecRef()
	}
}

// close claims every undecided flow: TCP SYNs are dropped without reply (the
// stack is going away) and stashed datagrams released. Later Accept calls
// return ErrFlowDone.
func (t *flowTable) close() {
	t.mu.Lock()
	t.closed = true
	var reqs []*tcp.ForwarderRequest
	for f := range t.tcpPending {
		reqs = append(reqs, f.req)
		f.req = nil
	}
	clear(t.tcpPending)
	clear(t.tcpBySource)
	var stash []*stack.PacketBuffer
	for _, f := range t.udpPending {
		f.req = nil
		stash = append(stash, f.stash...)
		f.stash = nil
	}
	clear(t.udpPending)
	t.mu.Unlock()
	for _, r := range reqs {
		r.Complete(false)
	}
	for _, p := range stash {
		p.DecRef()
	}
}

// wait blocks until no handler call is running.
func (t *flowTable) wait() { t.handlers.Wait() }
