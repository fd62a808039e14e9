package test

// SOCKS5 UDP associations (docs/connections.md, "UDP"): whose datagrams the relay takes, what it
// drops and counts, how an association ends (its control connection, idleness, the tunnel), and
// when one is refused (disabled, too many, no credentials) or its datagrams are (egress policy,
// too many destinations).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// udpRecorder is a UDP echo server that also keeps a copy of every datagram it receives.
type udpRecorder struct {
	addr netip.AddrPort
	mu   sync.Mutex
	got  [][]byte
}

// newUDPRecorder starts a udpRecorder on ip with a random port; the test's cleanup closes it and
// waits for its goroutine.
func newUDPRecorder(t testing.TB, ip string) *udpRecorder {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRecorder{addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got = append(r.got, slices.Clone(buf[:n]))
			r.mu.Unlock()
			_, _ = c.WriteToUDPAddrPort(buf[:n], src)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return r
}

// count is how many datagrams with exactly payload p the recorder received.
func (r *udpRecorder) count(p []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.got {
		if bytes.Equal(b, p) {
			n++
		}
	}
	return n
}

// listenUDP binds a UDP socket on 127.0.0.1 with a random port, closed at the test's end.
func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw is a SOCKS5 UDP datagram to dst: header (FRAG 0) and payload.
func raw(dst netip.AddrPort, payload string) []byte {
	return append(testutil.SOCKS5UDPHeader(dst, 0), payload...)
}

// sendRaw sends b from sock to the relay.
func sendRaw(t testing.TB, sock *net.UDPConn, relay netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := sock.WriteToUDPAddrPort(b, relay); err != nil {
		t.Fatal(err)
	}
}

// rawRoundTrip sends the raw datagram b from sock to relay until a datagram comes back from relay
// (at most three times, udpRTO apart); it returns that datagram and how many times b was sent.
func rawRoundTrip(t testing.TB, sock *net.UDPConn, relay netip.AddrPort, b []byte) ([]byte, int64) {
	t.Helper()
	buf := make([]byte, 65535)
	defer sock.SetReadDeadline(time.Time{})
	for try := int64(1); try <= 3; try++ {
		sendRaw(t, sock, relay, b)
		_ = sock.SetReadDeadline(time.Now().Add(udpRTO))
		for {
			n, src, err := sock.ReadFromUDPAddrPort(buf)
			if isTimeoutErr(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if src.Addr().Unmap() == relay.Addr() && src.Port() == relay.Port() {
				return slices.Clone(buf[:n]), try
			}
		}
	}
	t.Fatalf("no answer from the relay %v after 3 tries", relay)
	return nil, 0
}

type drops = map[messages.DropReason]uint64

// TestUDPForeignSource: once the client's first datagram fixed its port, a datagram from another
// local socket (same IP, valid header) is dropped and counted foreign_source: it never reaches the
// destination, and the client's own datagrams still go through.
func TestUDPForeignSource(t *testing.T) {
	rec := newUDPRecorder(t, "127.0.0.1")
	env := newConnEnv(t, "udp-foreign", nil, nil)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, rec.addr, 100, 4)
	foreign := listenUDP(t)
	marker := raw(rec.addr, "from a stranger")
	for range 3 {
		sendRaw(t, foreign, c.Relay(), marker)
	}
	pollTunnelUDP(t, env.tun, "three foreign datagrams dropped", func(s messages.ConnectionStats) bool {
		return s.UDP.Dropped[messages.DropForeignSource] >= 3
	})
	res.add(echoSmall(t, c, rec.addr, 200, 4))
	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, drops{messages.DropForeignSource: 3})
	if n := rec.count([]byte("from a stranger")); n != 0 {
		t.Errorf("the destination received %d foreign datagrams", n)
	}
}

// TestUDPSourceFromRequest: the request names the client's address and port (DST.ADDR/PORT of
// UDP ASSOCIATE): datagrams from that socket go through and their answers come back to it, with
// the header naming the destination; datagrams from the association's other socket are foreign.
func TestUDPSourceFromRequest(t *testing.T) {
	rec := newUDPRecorder(t, "127.0.0.1")
	env := newConnEnv(t, "udp-hint", nil, nil)
	own := listenUDP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := testutil.DialSOCKS5UDPFrom(ctx, env.tun.SOCKSAddr(), "", "", own.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatalf("UDP ASSOCIATE: %v", err)
	}
	defer c.Close()
	notMe := raw(rec.addr, "not the named socket")
	sendRaw(t, c.Local(), c.Relay(), notMe)
	sendRaw(t, c.Local(), c.Relay(), notMe)
	pollTunnelUDP(t, env.tun, "two foreign datagrams dropped", func(s messages.ConnectionStats) bool {
		return s.UDP.Dropped[messages.DropForeignSource] >= 2
	})
	var sent int64
	for i, p := range []string{"first", "second", "third"} {
		got, n := rawRoundTrip(t, own, c.Relay(), raw(rec.addr, p))
		sent += n
		if want := raw(rec.addr, p); !bytes.Equal(got, want) {
			t.Errorf("answer %d: % x, want % x (header naming the destination, then the payload)", i, got, want)
		}
	}
	st := closeAssociation(t, c, env.tun, 1)
	if st.UDP.DatagramsIn != sent || !maps.Equal(nonZero(st.UDP.Dropped), drops{messages.DropForeignSource: 2}) {
		t.Errorf("tunnel: %s; want %d datagrams in, 2 dropped foreign_source", fmtUDP(st), sent)
	}
	if n := rec.count([]byte("not the named socket")); n != 0 {
		t.Errorf("the destination received %d datagrams from the socket the request did not name", n)
	}
}

// TestUDPFragmentedAndMalformed: a datagram with FRAG ≠ 0 is dropped and counted fragmented;
// a header cut short, one with an unknown address type and one with port 0 are each counted
// malformed. None reaches the destination; the association goes on.
func TestUDPFragmentedAndMalformed(t *testing.T) {
	rec := newUDPRecorder(t, "127.0.0.1")
	env := newConnEnv(t, "udp-frag", nil, nil)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, rec.addr, 300, 2)
	frag := append(testutil.SOCKS5UDPHeader(rec.addr, 1), "fragment"...)
	sendRaw(t, c.Local(), c.Relay(), frag)
	hdr := testutil.SOCKS5UDPHeader(rec.addr, 0)
	atyp := slices.Clone(hdr)
	atyp[3] = 9
	for _, b := range [][]byte{
		hdr[:6], // the address cut short
		append(atyp, "unknown address type"...),
		raw(netip.AddrPortFrom(rec.addr.Addr(), 0), "port zero"),
	} {
		sendRaw(t, c.Local(), c.Relay(), b)
	}
	pollTunnelUDP(t, env.tun, "one fragmented and three malformed datagrams dropped", func(s messages.ConnectionStats) bool {
		return s.UDP.Dropped[messages.DropFragmented] >= 1 && s.UDP.Dropped[messages.DropMalformed] >= 3
	})
	res.add(echoSmall(t, c, rec.addr, 301, 4))
	st := closeAssociation(t, c, env.tun, 1)
	drainLate(t, c, &res, st.UDP.DatagramsOut)
	wantUDPCounts(t, "tunnel", st, res, drops{messages.DropFragmented: 1, messages.DropMalformed: 3})
	for _, p := range []string{"fragment", "unknown address type", "port zero"} {
		if n := rec.count([]byte(p)); n != 0 {
			t.Errorf("the destination received %q %d times", p, n)
		}
	}
}

// TestUDPAssociationEnds: an association is a proxy connection: listed by Tunnel.Connections
// (kind socks5-udp, the control connection's address, its payload bytes so far) while it lives.
// When the client closes its control connection it ends at once on both sides: normal on the
// client's incoming side and on the exit's, within a couple of seconds (the exit's idle timeout is
// a minute), and the engine's client counts equal what the client sent and received.
func TestUDPAssociationEnds(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-life", func(c *engine.Config) { c.Exit.UDPIdleTimeout = engine.Duration(time.Minute) }, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, echo, 400, 10)
	source := c.Control().LocalAddr().String()
	poll(t, "the association in Connections", env.tun.Connections, func(cs []engine.ConnInfo) bool {
		return len(cs) == 1 && cs[0].Kind == "socks5-udp" && cs[0].Source == source &&
			cs[0].BytesIn == res.bytesSent && cs[0].BytesOut >= res.bytesReceived
	})

	closed := time.Now()
	c.Control().Close()
	poll(t, "the association gone from Connections", env.tun.Connections, func(cs []engine.ConnInfo) bool { return len(cs) == 0 })
	d := udpEngineDelta(t, env.e, base, 1, 1)
	if took := time.Since(closed); took > 2*time.Second*raceSlowdown {
		t.Errorf("both halves ended %v after the control connection closed", took)
	}
	drainLate(t, c, &res, d.Client.UDP.DatagramsOut)
	wantUDPCounts(t, "engine client", d.Client, res, nil)
	if d.Client.Ended != 1 || ends(d.Client, messages.SideIncoming).String() != "{normal:1}" {
		t.Errorf("engine client: %s; want 1 ended, incoming normal", fmtUDP(d.Client))
	}
	if d.Exit.Ended != 1 || ends(d.Exit, messages.SideIncoming).String() != "{normal:1}" {
		t.Errorf("engine exit: %s; want its half ended, incoming normal", fmtUDP(d.Exit))
	}
	t.Logf("client %s; exit %s", fmtUDP(d.Client), fmtUDP(d.Exit))
}

// TestUDPAssociationIdle: with udp.idle_timeout 1s, an association that carries nothing is ended
// by the proxy, which closes its control connection (EOF) no sooner than a second after the last
// datagram; the client side records inactivity, and the exit's half ends as its control channel
// closes (normal).
func TestUDPAssociationIdle(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-idle", nil, func(s *engine.TunnelSpec) { s.UDP.IdleTimeout = engine.Duration(time.Second) })
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, echo, 500, 3)
	last := time.Now()
	err, n, ended := readUntilEnd(c.Control(), 10*time.Second*raceSlowdown)
	if !errors.Is(err, io.EOF) || n != 0 {
		t.Fatalf("control connection: %v after %d bytes, want EOF from the proxy", err, n)
	}
	idle := ended.Sub(last)
	if idle < 800*time.Millisecond {
		t.Errorf("closed %v after the last datagram, before the idle timeout (1 s)", idle)
	}
	t.Logf("closed %v after the last datagram", idle.Round(time.Millisecond))
	d := udpEngineDelta(t, env.e, base, 1, 1)
	drainLate(t, c, &res, d.Client.UDP.DatagramsOut)
	wantUDPCounts(t, "engine client", d.Client, res, nil)
	if d.Client.Ended != 1 || ends(d.Client, messages.SideIncoming).String() != "{inactivity:1}" {
		t.Errorf("engine client: %s; want 1 ended, incoming inactivity", fmtUDP(d.Client))
	}
	if d.Exit.Ended != 1 || ends(d.Exit, messages.SideIncoming).String() != "{normal:1}" {
		t.Errorf("engine exit: %s; want its half ended as its control channel closed (incoming normal)", fmtUDP(d.Exit))
	}
}

// TestUDPEgressDenied: the exit's egress policy refuses 127.0.0.2: datagrams to it are dropped on
// the exit (policy_denied, each counted) and never delivered; the client counts the drop once told.
// Datagrams to an allowed destination go on in the same association.
func TestUDPEgressDenied(t *testing.T) {
	denied := newUDPRecorder(t, "127.0.0.2")
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-deny", func(c *engine.Config) { c.Exit.Egress.Deny = []string{"127.0.0.2/32"} }, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, echo, 600, 2)
	payload := []byte("to a denied destination")
	sendRefused(t, env.tun, c, denied.addr, payload, 3, &res, messages.DropPolicyDenied)
	res.add(echoSmall(t, c, echo, 601, 5))
	checkRefused(t, env, c, base, &res, denied, payload, 3, messages.DropPolicyDenied)
}

// sendRefused sends payload n times to dst, which the exit refuses for why, counting them in res,
// and waits until the exit's notice reached the client.
func sendRefused(t testing.TB, tun *engine.Tunnel, c *testutil.SOCKS5UDP, dst netip.AddrPort, payload []byte, n int,
	res *exchangeResult, why messages.DropReason) {
	t.Helper()
	for range n {
		if _, err := c.WriteTo(payload, net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
		res.sent++
		res.bytesSent += int64(len(payload))
	}
	pollTunnelUDP(t, tun, "the exit's refusal told to the client", func(s messages.ConnectionStats) bool {
		return s.UDP.Dropped[why] >= 1
	})
}

// checkRefused closes c and checks the engine's counts since base: the exit dropped exactly n
// datagrams for why, the client counted the destination once (the exit's notice) and everything
// else exactly, and the destination received none.
func checkRefused(t testing.TB, env *connEnv, c *testutil.SOCKS5UDP, base engine.Stats, res *exchangeResult,
	dst *udpRecorder, payload []byte, n uint64, why messages.DropReason) {
	t.Helper()
	c.Control().Close()
	d := udpEngineDelta(t, env.e, base, 1, 1)
	drainLate(t, c, res, d.Client.UDP.DatagramsOut)
	wantUDPCounts(t, "engine client", d.Client, *res, drops{why: 1})
	if got := nonZero(d.Exit.UDP.Dropped); !maps.Equal(got, drops{why: n}) {
		t.Errorf("engine exit: %s; want exactly %d %s", fmtUDP(d.Exit), n, why)
	}
	if k := dst.count(payload); k != 0 {
		t.Errorf("the refused destination received %d datagrams", k)
	}
}

// TestUDPDestinationLimit: with exit.udp_max_destinations 2, datagrams to a third destination are
// dropped (limit, each counted on the exit; the client counts once told); the first two still work.
func TestUDPDestinationLimit(t *testing.T) {
	e1, e2, third := testutil.UDPEchoServer(t), testutil.UDPEchoServer(t), newUDPRecorder(t, "127.0.0.1")
	env := newConnEnv(t, "udp-dests", func(c *engine.Config) { c.Exit.UDPMaxDestinations = 2 }, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, e1, 700, 2)
	res.add(echoSmall(t, c, e2, 701, 2))
	payload := []byte("one destination too many")
	sendRefused(t, env.tun, c, third.addr, payload, 2, &res, messages.DropLimit)
	res.add(echoSmall(t, c, e1, 702, 3))
	res.add(echoSmall(t, c, e2, 703, 3))
	checkRefused(t, env, c, base, &res, third, payload, 2, messages.DropLimit)
}

// replyCode is the SOCKS5 reply code in err, or fails the test.
func replyCode(t testing.TB, err error) byte {
	t.Helper()
	var re testutil.SOCKS5ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("UDP ASSOCIATE: %v, want a SOCKS5 reply error", err)
	}
	return re.Code
}

// TestUDPDisabled: with udp.disable, UDP ASSOCIATE gets 0x07 (command not supported); CONNECT
// through the same proxy still works.
func TestUDPDisabled(t *testing.T) {
	env := newConnEnv(t, "udp-off", nil, func(s *engine.TunnelSpec) { s.UDP.Disable = true })
	c, err := tryAssociate(env.tun, "", "")
	if err == nil {
		c.Close()
		t.Fatal("UDP ASSOCIATE succeeded on a tunnel with udp.disable")
	}
	if code := replyCode(t, err); code != 0x07 {
		t.Fatalf("reply %#02x, want 0x07", code)
	}
	conn := mustSocks(t, env.tun.SOCKSAddr(), startServer(t, echoHandler).Addr())
	defer conn.Close()
	if err := roundTrip(conn, "tcp still works"); err != nil {
		t.Fatal(err)
	}
}

// TestUDPMaxAssociations: with udp.max_associations 1, a second association is refused (0x01,
// counted limit) while the first lives and works; once the first ended, a new one is served.
func TestUDPMaxAssociations(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-max", nil, func(s *engine.TunnelSpec) { s.UDP.MaxAssociations = 1 })
	first := associate(t, env.tun, "", "")
	echoSmall(t, first, echo, 800, 2)
	second, err := tryAssociate(env.tun, "", "")
	if err == nil {
		second.Close()
		t.Fatal("a second association was served with udp.max_associations 1")
	}
	if code := replyCode(t, err); code != 0x01 {
		t.Fatalf("second association: reply %#02x, want 0x01", code)
	}
	pollTunnelUDP(t, env.tun, "the refusal counted", func(s messages.ConnectionStats) bool {
		return s.ByEnd[messages.SideIncoming][messages.EndLimit] == 1 && s.Active == 1
	})
	echoSmall(t, first, echo, 801, 2)
	closeAssociation(t, first, env.tun, 1)
	third := associate(t, env.tun, "", "")
	echoSmall(t, third, echo, 802, 4)
}

// TestUDPAuth: with proxy users, UDP ASSOCIATE is served with the right credentials and refused
// without any, with a wrong password and with an unknown user (each counted auth_failed).
func TestUDPAuth(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-auth", nil, func(s *engine.TunnelSpec) {
		s.Auth = engine.ProxyAuth{Users: []engine.ProxyUser{{User: "alice", Password: "wonder"}}}
	})
	c := associate(t, env.tun, "alice", "wonder")
	echoSmall(t, c, echo, 900, 4)
	for _, cred := range [][2]string{{"", ""}, {"alice", "nope"}, {"mallory", "wonder"}} {
		if c, err := tryAssociate(env.tun, cred[0], cred[1]); !errors.Is(err, testutil.ErrSOCKS5Auth) {
			if c != nil {
				c.Close()
			}
			t.Errorf("credentials %q: %v, want refused", cred, err)
		}
	}
	pollTunnelUDP(t, env.tun, "three refusals counted", func(s messages.ConnectionStats) bool {
		return s.ByEnd[messages.SideIncoming][messages.EndAuthFailed] == 3
	})
	echoSmall(t, c, echo, 901, 2)
}

// TestUDPTunnelClosed: Tunnel.Close (no drain) while an association is active closes its control
// connection; the association ends tunnel_closed on its outgoing side, the exit's half ends too,
// and the engine's client counts equal what the client sent and received.
func TestUDPTunnelClosed(t *testing.T) {
	echo := testutil.UDPEchoServer(t)
	env := newConnEnv(t, "udp-tunclose", nil, nil)
	base := settled(t, env.e)
	c := associate(t, env.tun, "", "")
	res := echoSmall(t, c, echo, 1000, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.tun.Close(ctx, engine.WithDrainTimeout(0)); err != nil {
		t.Fatal(err)
	}
	if err, _, _ := readUntilEnd(c.Control(), 10*time.Second); isTimeoutErr(err) {
		t.Fatalf("control connection still open after Tunnel.Close: %v", err)
	}
	d := udpEngineDelta(t, env.e, base, 1, 1)
	drainLate(t, c, &res, d.Client.UDP.DatagramsOut)
	wantUDPCounts(t, "engine client", d.Client, res, nil)
	if d.Client.Ended != 1 || ends(d.Client, messages.SideOutgoing)[messages.EndTunnelClosed] != 1 {
		t.Errorf("engine client: %s; want 1 ended, outgoing tunnel_closed", fmtUDP(d.Client))
	}
	t.Logf("client %s; exit %s", fmtUDP(d.Client), fmtUDP(d.Exit))
}
