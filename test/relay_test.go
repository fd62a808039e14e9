package test

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay is a UDP relay between WireGuard clients and an exit on 127.0.0.1 that a test can
// blackhole, make lossy, or restore. Point the exit's advertised endpoint (ExitConfig.Endpoint) at
// Addr() and the relay at the exit's real UDP address; every client then goes through it.
type Relay struct {
	ln       *net.UDPConn
	target   atomic.Pointer[netip.AddrPort]
	drop     atomic.Int64 // per mille of datagrams dropped, both ways; 1000 = blackhole
	mu       sync.Mutex
	ups      map[netip.AddrPort]*net.UDPConn // one upstream socket per client address
	holes    map[netip.AddrPort]bool         // clients whose datagrams are dropped both ways
	wg       sync.WaitGroup
	closed   atomic.Bool
	Passed   atomic.Int64 // datagrams forwarded, both ways
	FromExit atomic.Int64 // datagrams forwarded from the exit to a client
}

// NewRelay listens on 127.0.0.1 with a random port; it is closed at the test's end.
func NewRelay(t testing.TB) *Relay {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, ups: map[netip.AddrPort]*net.UDPConn{}, holes: map[netip.AddrPort]bool{}}
	r.wg.Add(1)
	go r.fromClients()
	t.Cleanup(r.Close)
	return r
}

// Addr is where clients should send.
func (r *Relay) Addr() netip.AddrPort { return r.ln.LocalAddr().(*net.UDPAddr).AddrPort() }

// SetTarget says where the exit listens.
func (r *Relay) SetTarget(ap netip.AddrPort) { r.target.Store(&ap) }

// Blackhole drops everything from now on; Restore passes everything again; Lossy drops perMille/1000.
func (r *Relay) Blackhole()           { r.drop.Store(1000) }
func (r *Relay) Restore()             { r.drop.Store(0) }
func (r *Relay) Lossy(perMille int64) { r.drop.Store(perMille) }

// BlackholeClient drops everything of one client seen so far (the lowest address), both ways, and
// returns it; ok is false if no client was seen yet.
func (r *Relay) BlackholeClient() (client netip.AddrPort, ok bool) {
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

func (r *Relay) holed(client netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holes[client]
}

func (r *Relay) dropped() bool {
	d := r.drop.Load()
	return d >= 1000 || (d > 0 && rand.Int64N(1000) < d)
}

func (r *Relay) fromClients() {
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
		up := r.upstream(src)
		if up == nil {
			return
		}
		if _, err := up.WriteToUDPAddrPort(buf[:n], *tgt); err == nil {
			r.Passed.Add(1)
		}
	}
}

func (r *Relay) upstream(client netip.AddrPort) *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil
	}
	if up := r.ups[client]; up != nil {
		return up
	}
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil
	}
	r.ups[client] = up
	r.wg.Add(1)
	go func() { // exit → this client
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
				r.FromExit.Add(1)
			}
		}
	}()
	return up
}

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() {
	if r.closed.Swap(true) {
		return
	}
	_ = r.ln.Close()
	r.mu.Lock()
	for _, up := range r.ups {
		_ = up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
