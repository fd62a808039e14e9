package testutil

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// UDPRelay forwards datagrams between clients and a target (a WireGuard endpoint), and can drop
// everything (blackhole) to simulate a dead path, drop a share of datagrams, or cut one client.
// Clients send to Addr; each client gets an upstream socket of its own towards the target, so the
// target sees one address per client, which stays the same across SetTarget. The relay listens on
// the loopback of the target's family (127.0.0.1 for an invalid target); SetTarget keeps to that
// family.
type UDPRelay struct {
	ln     *net.UDPConn
	lo     netip.Addr // the loopback the relay and its upstream sockets are on
	target atomic.Pointer[netip.AddrPort]
	drop   atomic.Int64                    // per mille of datagrams dropped, both ways; 1000 = blackhole
	mu     sync.Mutex                      // guards ups, holes and closed
	ups    map[netip.AddrPort]*net.UDPConn // one upstream socket per client address
	holes  map[netip.AddrPort]bool         // clients whose datagrams are dropped both ways
	closed bool
	wg     sync.WaitGroup
	once   sync.Once

	Passed     atomic.Int64 // datagrams forwarded, both ways
	FromTarget atomic.Int64 // datagrams forwarded from the target to a client
}

// maxRelayClients bounds the upstream sockets (and goroutines) of a relay; datagrams of further
// clients are dropped.
const maxRelayClients = 256

// StartUDPRelay starts a relay to target on a random loopback port; it is closed at the test's
// end. An invalid target drops everything until SetTarget.
func StartUDPRelay(t testing.TB, target netip.AddrPort) *UDPRelay {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	if target.Addr().Is6() && !target.Addr().Is4In6() {
		lo = netip.IPv6Loopback()
	}
	ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
	if err != nil {
		t.Fatal(err)
	}
	r := &UDPRelay{ln: ln, lo: lo, ups: map[netip.AddrPort]*net.UDPConn{}, holes: map[netip.AddrPort]bool{}}
	if target.IsValid() {
		r.SetTarget(target)
	}
	r.wg.Add(1)
	go r.fromClients()
	t.Cleanup(r.Close)
	return r
}

// Addr is where clients send.
func (r *UDPRelay) Addr() netip.AddrPort { return r.ln.LocalAddr().(*net.UDPAddr).AddrPort() }

// SetTarget says where datagrams from clients go from now on (a restarted server on another
// port, say); replies from any address reach the client.
func (r *UDPRelay) SetTarget(ap netip.AddrPort) { r.target.Store(&ap) }

// SetBlackhole(true) drops every datagram, both ways, from now on; SetBlackhole(false) passes
// every datagram again (ending a SetLoss too).
func (r *UDPRelay) SetBlackhole(on bool) {
	if on {
		r.drop.Store(1000)
	} else {
		r.drop.Store(0)
	}
}

// SetLoss drops perMille/1000 of the datagrams, both ways, at random (0: none, 1000: all).
func (r *UDPRelay) SetLoss(perMille int64) { r.drop.Store(perMille) }

// BlackholeClient drops everything of one client seen so far (the lowest address), both ways, for
// good, and returns it; ok is false if no client was seen yet.
func (r *UDPRelay) BlackholeClient() (client netip.AddrPort, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.ups {
		if !r.holes[c] && (!ok || c.Compare(client) < 0) {
			client, ok = c, true
		}
	}
	if ok {
		r.holes[client] = true
	}
	return client, ok
}

func (r *UDPRelay) holed(client netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holes[client]
}

func (r *UDPRelay) dropped() bool {
	d := r.drop.Load()
	return d >= 1000 || (d > 0 && rand.Int64N(1000) < d)
}

// fromClients forwards datagrams from clients to the target.
func (r *UDPRelay) fromClients() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, src, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		tgt := r.target.Load()
		if tgt == nil || r.dropped() || r.holed(src) {
			continue
		}
		up, ok := r.upstream(src)
		if !ok {
			return
		}
		if up == nil {
			continue
		}
		if _, err := up.WriteToUDPAddrPort(buf[:n], *tgt); err == nil {
			r.Passed.Add(1)
		}
	}
}

// upstream is client's upstream socket, opened (with its goroutine) on first use; nil if it cannot
// be opened; ok is false once the relay is closing.
func (r *UDPRelay) upstream(client netip.AddrPort) (up *net.UDPConn, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	if up := r.ups[client]; up != nil {
		return up, true
	}
	if len(r.ups) >= maxRelayClients {
		return nil, true
	}
	up, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.lo, 0)))
	if err != nil {
		return nil, true
	}
	r.ups[client] = up
	r.wg.Add(1)
	go r.toClient(up, client)
	return up, true
}

// toClient forwards what arrives on client's upstream socket to the client.
func (r *UDPRelay) toClient(up *net.UDPConn, client netip.AddrPort) {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, _, err := up.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if r.dropped() || r.holed(client) {
			continue
		}
		if _, err := r.ln.WriteToUDPAddrPort(buf[:n], client); err == nil {
			r.Passed.Add(1)
			r.FromTarget.Add(1)
		}
	}
}

// Close stops the relay, closes its sockets and waits for its goroutines; it may be called more
// than once.
func (r *UDPRelay) Close() {
	r.once.Do(func() {
		_ = r.ln.Close()
		r.mu.Lock()
		r.closed = true
		for _, up := range r.ups {
			_ = up.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
}
