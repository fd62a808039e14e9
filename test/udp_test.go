package test

// SOCKS5 UDP ASSOCIATE through real engines (docs/connections.md, "UDP"): DNS and echo traffic
// through one association, checked datagram by datagram and counted exactly at both ends. The
// other behaviours (sources, drops, lifecycle, refusals) are in udp_more_test.go.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// udpRTO is how long a request waits for its answer before it is sent again.
const udpRTO = time.Second * raceSlowdown

// associate opens a UDP association through tun's SOCKS5 proxy (user "" for no authentication)
// within 10 s; it is closed at the test's end.
func associate(t testing.TB, tun *engine.Tunnel, user, pass string) *testutil.SOCKS5UDP {
	t.Helper()
	c, err := tryAssociate(tun, user, pass)
	if err != nil {
		t.Fatalf("UDP ASSOCIATE: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tryAssociate(tun *engine.Tunnel, user, pass string) (*testutil.SOCKS5UDP, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return testutil.DialSOCKS5UDP(ctx, tun.SOCKSAddr(), user, pass)
}

// exchange is a run of n request/answer pairs over an association, at most window outstanding.
// send sends request i (again, on a retransmission) and returns its payload's length; match names
// the request an answer belongs to, or says what is wrong with it (the test then fails). A request
// unanswered for udpRTO is sent again, at most maxTries times in all; the run fails if one never is
// answered, or if more than maxRetransmits retransmissions were needed in total.
type exchange struct {
	n, window, maxTries, maxRetransmits int
	send                                func(i int) (int, error)
	match                               func(b []byte, from net.Addr) (int, error)
}

// exchangeResult counts what the client sent (retransmissions included) and received
// (duplicates included): datagrams and payload bytes.
type exchangeResult struct {
	sent, received, retransmits int64
	bytesSent, bytesReceived    int64
}

func runExchange(t testing.TB, c *testutil.SOCKS5UDP, x exchange) exchangeResult {
	t.Helper()
	var res exchangeResult
	type pending struct {
		at    time.Time
		tries int
	}
	out := make(map[int]*pending, x.window)
	done := make([]bool, x.n)
	answered, next := 0, 0
	send := func(i int) {
		n, err := x.send(i)
		if err != nil {
			t.Fatalf("send request %d: %v", i, err)
		}
		res.sent++
		res.bytesSent += int64(n)
	}
	buf := make([]byte, 65535)
	limit := time.Now().Add(60 * time.Second)
	defer c.SetReadDeadline(time.Time{})
	for answered < x.n {
		if time.Now().After(limit) {
			t.Fatalf("%d of %d requests answered after 60 s (%d retransmissions)", answered, x.n, res.retransmits)
		}
		for next < x.n && len(out) < x.window {
			send(next)
			out[next] = &pending{at: time.Now(), tries: 1}
			next++
		}
		oldest := time.Now()
		for _, p := range out {
			if p.at.Before(oldest) {
				oldest = p.at
			}
		}
		_ = c.SetReadDeadline(oldest.Add(udpRTO))
		n, from, err := c.ReadFrom(buf)
		switch {
		case err == nil:
			res.received++
			res.bytesReceived += int64(n)
			i, err := x.match(buf[:n], from)
			if err != nil {
				t.Fatalf("answer %d (%d bytes from %v): %v", res.received, n, from, err)
			}
			if i < 0 || i >= next {
				t.Fatalf("answer %d (%d bytes from %v) names request %d, not sent", res.received, n, from, i)
			}
			if !done[i] {
				done[i] = true
				answered++
				delete(out, i)
			}
		case isTimeoutErr(err):
		default:
			t.Fatalf("read after %d answers: %v", answered, err)
		}
		now := time.Now()
		for i, p := range out {
			if now.Sub(p.at) < udpRTO {
				continue
			}
			if p.tries >= x.maxTries {
				t.Fatalf("request %d unanswered after %d tries (%d of %d answered)", i, p.tries, answered, x.n)
			}
			send(i)
			p.at, p.tries = now, p.tries+1
			if res.retransmits++; res.retransmits > int64(x.maxRetransmits) {
				t.Fatalf("more than %d retransmissions (%d of %d answered)", x.maxRetransmits, answered, x.n)
			}
		}
	}
	return res
}

func (r *exchangeResult) add(o exchangeResult) {
	r.sent, r.received, r.retransmits = r.sent+o.sent, r.received+o.received, r.retransmits+o.retransmits
	r.bytesSent, r.bytesReceived = r.bytesSent+o.bytesSent, r.bytesReceived+o.bytesReceived
}

// echoPayload is datagram i of an echo run: seeded bytes with i in its first four (a payload of
// fewer than four bytes is told by its size: only datagram size-1 may have it).
func echoPayload(seed uint64, i, size int) []byte {
	b := testutil.PayloadBytes(seed+uint64(i), size)
	if size >= 4 {
		binary.BigEndian.PutUint32(b, uint32(i))
	}
	return b
}

// echoRun sends n datagrams of size(i) bytes to dst, an echo server, at most window at once, and
// checks that each comes back with the same bytes, from a source sources accepts.
func echoRun(t testing.TB, c *testutil.SOCKS5UDP, dst net.Addr, sources func(netip.AddrPort) bool, seed uint64,
	n, window int, size func(int) int) exchangeResult {
	t.Helper()
	payloads := make([][]byte, n)
	for i := range payloads {
		if s := size(i); s < 4 && s != i+1 {
			t.Fatalf("echoRun: datagram %d of %d bytes cannot be told apart", i, s)
		}
		payloads[i] = echoPayload(seed, i, size(i))
	}
	return runExchange(t, c, exchange{n: n, window: window, maxTries: 5, maxRetransmits: max(n/100, 5),
		send: func(i int) (int, error) { return c.WriteTo(payloads[i], dst) },
		match: func(b []byte, from net.Addr) (int, error) {
			ua, ok := from.(*net.UDPAddr)
			if !ok || !sources(ua.AddrPort()) {
				return 0, fmt.Errorf("source %v (%T)", from, from)
			}
			i := len(b) - 1
			if len(b) >= 4 {
				i = int(binary.BigEndian.Uint32(b))
			}
			if i < 0 || i >= n || !bytes.Equal(b, payloads[i]) {
				return 0, fmt.Errorf("%d bytes % x…: not a datagram that was sent", len(b), b[:min(len(b), 8)])
			}
			return i, nil
		}})
}

// from accepts exactly want.
func from(want netip.AddrPort) func(netip.AddrPort) bool {
	return func(a netip.AddrPort) bool { return a == want }
}

// echoSmall is a short echo run of small datagrams (16-115 bytes) to dst.
func echoSmall(t testing.TB, c *testutil.SOCKS5UDP, dst netip.AddrPort, seed uint64, n int) exchangeResult {
	t.Helper()
	return echoRun(t, c, net.UDPAddrFromAddrPort(dst), from(dst), seed, n, 8, func(i int) int { return 16 + i%100 })
}

// closeAssociation closes c's control connection (its local socket stays open for late
// datagrams) and waits until tun has ended assocs associations and has none active.
func closeAssociation(t testing.TB, c *testutil.SOCKS5UDP, tun *engine.Tunnel, assocs uint64) messages.ConnectionStats {
	t.Helper()
	c.Control().Close()
	return waitTunnelUDP(t, tun, assocs)
}

// waitTunnelUDP waits until tun has ended assocs associations and has none active.
func waitTunnelUDP(t testing.TB, tun *engine.Tunnel, assocs uint64) messages.ConnectionStats {
	t.Helper()
	return pollTunnelUDP(t, tun, "the tunnel's associations to end", func(s messages.ConnectionStats) bool {
		return s.UDP.Associations >= assocs && s.Active == 0
	})
}

// pollTunnelUDP polls tun's stats until ok accepts them (a failure shows the UDP counts).
func pollTunnelUDP(t testing.TB, tun *engine.Tunnel, what string, ok func(messages.ConnectionStats) bool) messages.ConnectionStats {
	t.Helper()
	get := func(ctx context.Context) (udpShown, error) {
		s, err := tun.Stats(ctx)
		return udpShown{Client: s}, err
	}
	return testutil.Poll(t, pollFor, what, get, func(s udpShown) bool { return ok(s.Client) }).Client
}

// drainLate reads the datagrams still queued on c's socket once its association ended, until res
// counts want received (the proxy's count) or nothing more comes within a second.
func drainLate(t testing.TB, c *testutil.SOCKS5UDP, res *exchangeResult, want int64) {
	t.Helper()
	buf := make([]byte, 65535)
	defer c.SetReadDeadline(time.Time{})
	for res.received < want {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if !isTimeoutErr(err) {
				t.Errorf("reading late datagrams: %v", err)
			}
			return
		}
		res.received++
		res.bytesReceived += int64(n)
	}
}

// wantUDPCounts checks an association's (or a sum's) counts against what the client did: every
// datagram it sent taken in, every one it received sent out, payload bytes both ways, and exactly
// the drops in drops.
func wantUDPCounts(t testing.TB, who string, s messages.ConnectionStats, res exchangeResult, drops map[messages.DropReason]uint64) {
	t.Helper()
	if s.UDP.DatagramsIn != res.sent || s.UDP.DatagramsOut != res.received || s.Bytes.In != res.bytesSent || s.Bytes.Out != res.bytesReceived ||
		!maps.Equal(nonZero(s.UDP.Dropped), nonZero(drops)) {
		t.Errorf("%s: %s; want datagrams in/out %d/%d, bytes %d/%d, dropped %v", who, fmtUDP(s),
			res.sent, res.received, res.bytesSent, res.bytesReceived, nonZero(drops))
	}
}

func nonZero(m map[messages.DropReason]uint64) map[messages.DropReason]uint64 {
	out := map[messages.DropReason]uint64{}
	for r, n := range m {
		if n != 0 {
			out[r] = n
		}
	}
	return out
}

func fmtUDP(s messages.ConnectionStats) string {
	return fmt.Sprintf("%s udp{assoc=%d in=%d out=%d dropped=%v}", fmtStats(s), s.UDP.Associations, s.UDP.DatagramsIn,
		s.UDP.DatagramsOut, nonZero(s.UDP.Dropped))
}

// udpShown prints engine stats with their UDP counts.
type udpShown engine.Stats

func (s udpShown) String() string {
	return "client{" + fmtUDP(s.Client) + "} exit{" + fmtUDP(s.Exit) + "}"
}

// udpEngineDelta waits until, since base, the engine has ended at least client associations in
// the client role and exit in the exit role, with no connection active, and returns the
// differences, UDP counts included.
func udpEngineDelta(t testing.TB, e *engine.Engine, base engine.Stats, client, exit uint64) engine.Stats {
	t.Helper()
	get := func(ctx context.Context) (udpShown, error) {
		s, err := e.Stats(ctx)
		return udpShown{Client: subUDP(s.Client, base.Client), Exit: subUDP(s.Exit, base.Exit)}, err
	}
	return engine.Stats(testutil.Poll(t, pollFor, "the engine's associations to end", get, func(d udpShown) bool {
		return d.Client.UDP.Associations >= client && d.Exit.UDP.Associations >= exit && d.Client.Active == 0 && d.Exit.Active == 0
	}))
}

func subUDP(a, b messages.ConnectionStats) messages.ConnectionStats {
	d := subStats(a, b)
	d.UDP.Associations = a.UDP.Associations - b.UDP.Associations
	d.UDP.DatagramsIn, d.UDP.DatagramsOut = a.UDP.DatagramsIn-b.UDP.DatagramsIn, a.UDP.DatagramsOut-b.UDP.DatagramsOut
	d.UDP.Dropped = map[messages.DropReason]uint64{}
	for r, n := range a.UDP.Dropped {
		if n != b.UDP.Dropped[r] {
			d.UDP.Dropped[r] = n - b.UDP.Dropped[r]
		}
	}
	return d
}

// ipv6Loopback skips the test when ::1 cannot be bound.
func ipv6Loopback(t testing.TB) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
}

// TestUDPDNS: 1,000 DNS queries (A and AAAA, four names, one of them unknown) through one
// association to an in-process DNS server, at most 32 outstanding: every one is answered, from
// the server, with its own id and exactly the records asked for (NXDOMAIN for the unknown name).
// Then the association closes, and its counts on the tunnel and the engine (both roles) match
// what the client sent and received.
func TestUDPDNS(t *testing.T) {
	records := map[string][]netip.Addr{
		"one.test":  {netip.MustParseAddr("10.1.0.1")},
		"two.test":  {netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("10.2.0.2"), netip.MustParseAddr("fd00::2")},
		"six.test":  {netip.MustParseAddr("2001:db8::6"), netip.MustParseAddr("2001:db8::7")},
		"many.test": {},
	}
	for i := range 12 {
		records["many.test"] = append(records["many.test"], netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), netip.MustParseAddr(fmt.Sprintf("fd00::9:%d", i)))
	}
	names := []string{"one.test", "two.test", "six.test", "many.test", "missing.test"}
	dns := testutil.DNSServer(t, records)
	env := newConnEnv(t, "udp-dns", nil, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	if want := netip.MustParseAddr("127.0.0.1"); c.Relay().Addr() != want || c.Relay().Port() == 0 {
		t.Fatalf("relay %v, want %v and a port (the address the client connected the proxy on)", c.Relay(), want)
	}

	const queries = 1000
	query := func(i int) (string, dnsmessage.Type) {
		typ := dnsmessage.TypeA
		if (i/len(names))%2 == 1 {
			typ = dnsmessage.TypeAAAA
		}
		return names[i%len(names)], typ
	}
	dst := net.UDPAddrFromAddrPort(dns)
	nx := 0
	res := runExchange(t, c, exchange{n: queries, window: 32, maxTries: 5, maxRetransmits: 20,
		send: func(i int) (int, error) {
			name, typ := query(i)
			return c.WriteTo(testutil.DNSQuery(uint16(i), name, typ), dst)
		},
		match: func(b []byte, src net.Addr) (int, error) {
			if ua, ok := src.(*net.UDPAddr); !ok || ua.AddrPort() != dns {
				return 0, fmt.Errorf("source %v, want the DNS server %v", src, dns)
			}
			id, addrs, rcode, err := testutil.ParseDNSAnswer(b)
			if err != nil {
				return 0, err
			}
			i := int(id)
			if i >= queries {
				return 0, fmt.Errorf("id %d: no such query", id)
			}
			name, typ := query(i)
			var want []netip.Addr
			wantCode := dnsmessage.RCodeSuccess
			if recs, ok := records[name]; ok {
				for _, a := range recs {
					if a.Is4() == (typ == dnsmessage.TypeA) {
						want = append(want, a)
					}
				}
			} else {
				wantCode = dnsmessage.RCodeNameError
			}
			if rcode != wantCode || !slices.Equal(addrs, want) {
				return 0, fmt.Errorf("query %d (%s %v): %v %v, want %v %v", i, name, typ, rcode, addrs, wantCode, want)
			}
			if rcode == dnsmessage.RCodeNameError {
				nx++
			}
			return i, nil
		}})
	t.Logf("%d queries answered: %d datagrams sent (%d retransmitted), %d received, %d NXDOMAIN", queries, res.sent, res.retransmits, res.received, nx)

	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, nil)
	if st.UDP.Associations != 1 {
		t.Errorf("tunnel: %d associations ended, want 1", st.UDP.Associations)
	}
	d := udpEngineDelta(t, env.e, base, 1, 1)
	wantUDPCounts(t, "engine client", d.Client, res, nil)
	checkExitCounts(t, d, queries)
}

// checkExitCounts: the exit half of one association sent at least answered datagrams on and back,
// no more than the client gave it and no fewer than the client got back, and dropped none.
func checkExitCounts(t testing.TB, d engine.Stats, answered int64) {
	t.Helper()
	c, x := d.Client.UDP, d.Exit.UDP
	if x.Associations != 1 || x.DatagramsIn < answered || x.DatagramsIn > c.DatagramsIn || x.DatagramsOut < c.DatagramsOut ||
		x.DatagramsOut > x.DatagramsIn || len(nonZero(x.Dropped)) != 0 {
		t.Errorf("exit: %s; want 1 association, %d <= in <= %d (the client's), out >= %d (the client's) and <= in, no drops",
			fmtUDP(d.Exit), answered, c.DatagramsIn, c.DatagramsOut)
	}
}

// mixedSize is datagram i's payload size in TestUDPEcho: 1-3 bytes for the first three, 1400
// bytes for one in 500, 1200 for one in 100, else 4-1200.
func mixedSize(i int) int {
	switch {
	case i < 3:
		return i + 1
	case i%500 == 250:
		return 1400
	case i%100 == 0:
		return 1200
	}
	return 4 + int(uint32(i)*2654435761%1197)
}

// TestUDPEcho: 10,000 datagrams of mixed sizes (1 to 1,400 bytes) through one association to a
// UDP echo server, at most 64 outstanding: each comes back with the same bytes, from the echo
// server. While the association lives its counts show on the tunnel; once it ended, the tunnel's
// and the engine's counts equal what the client sent and received, datagrams and payload bytes.
func TestUDPEcho(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-echo", nil, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	const n = 10000
	res := echoRun(t, c, net.UDPAddrFromAddrPort(echo), from(echo), 7000, n, 64, mixedSize)
	t.Logf("%d datagrams echoed: %d sent (%d retransmitted), %d received, %d/%d payload bytes",
		n, res.sent, res.retransmits, res.received, res.bytesSent, res.bytesReceived)
	pollTunnelUDP(t, env.tun, "the live association's counts on the tunnel", func(s messages.ConnectionStats) bool {
		return s.UDP.DatagramsIn >= n && s.UDP.DatagramsOut >= n && s.Active == 1
	})

	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, nil)
	d := udpEngineDelta(t, env.e, base, 1, 1)
	wantUDPCounts(t, "engine client", d.Client, res, nil)
	checkExitCounts(t, d, n)
}

// TestUDPDomainDestination: datagrams to localhost by name (SOCKS5 ATYP 3, resolved on the exit)
// reach an echo server on the loopback address the name resolved to, and come back naming it as
// an IP address. The echo listens on 127.0.0.1 and, where it can, on ::1 with the same port.
func TestUDPDomainDestination(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err == nil {
		c.Close()
		// Best effort: the port is free on ::1 unless something else holds it.
		if l, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: int(echo.Port())}); err == nil {
			l.Close()
			testutil.UDPEchoServerOn(t, netip.AddrPortFrom(netip.IPv6Loopback(), echo.Port()).String())
		}
	}
	env := newConnEnv(t, "udp-domain", nil, nil)
	c := associate(t, env.tun, "", "")
	seen := map[netip.AddrPort]int{}
	res := echoRun(t, c, testutil.DomainAddr{Host: "localhost", Port: echo.Port()}, func(a netip.AddrPort) bool {
		seen[a]++
		return a.Port() == echo.Port() && a.Addr().IsLoopback()
	}, 8000, 20, 4, func(i int) int { return 32 + i })
	t.Logf("echoed from %v", seen)
	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, nil)
}

// TestUDPEchoIPv6: an IPv6 destination (ATYP 4): the echo on ::1 answers, named ::1 in the reply.
func TestUDPEchoIPv6(t *testing.T) {
	ipv6Loopback(t)
	echo := testutil.UDPEchoServerOn(t, "[::1]:0")
	env := newConnEnv(t, "udp-ipv6", nil, nil)
	c := associate(t, env.tun, "", "")
	res := echoRun(t, c, net.UDPAddrFromAddrPort(echo), from(echo), 9000, 200, 16, func(i int) int { return 4 + i*5 })
	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, nil)
}
