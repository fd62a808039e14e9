package test

// Each end reason produced by a real scenario, with exact counts on the client tunnel and on the
// exit (Engine.Stats().Exit, as a difference from the baseline once the tunnel's probe has ended).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

type ec = endCounts

const (
	rNormal     = messages.EndNormal
	rReset      = messages.EndReset
	rTimeout    = messages.EndTimeout
	rInactivity = messages.EndInactivity
	rLifetime   = messages.EndMaxLifetime
	rLimit      = messages.EndLimit
	rPolicy     = messages.EndPolicyDenied
	rDialFailed = messages.EndDialFailed
	rTunnel     = messages.EndTunnelClosed
	rShutdown   = messages.EndEngineShutdown
	rProtocol   = messages.EndProtocolError
)

// idleLimits sets the inactivity timeout and the close grace. The keep-alive inactivity timeout is
// set to the same value so that the keep-alive allowance cannot apply: its detection also counts
// the proxy client's delayed ACKs as probes (see TestConnKeepaliveNoFalsePositive).
func idleLimits(idle, grace time.Duration) func(*engine.TunnelSpec) {
	return func(s *engine.TunnelSpec) {
		s.Connections.IdleTimeout, s.Connections.CloseGrace = engine.Duration(idle), engine.Duration(grace)
		s.Connections.KeepaliveIdleTimeout = engine.Duration(idle)
	}
}

func TestConnReasonNormal(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	env := newConnEnv(t, "normal", nil, nil)
	base := settled(t, env.e)
	if err := download(socksClient(t, env.tun), srv.URL, 11, 256<<10); err != nil {
		t.Fatal(err)
	}
	wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{rNormal: 1}, ec{rNormal: 1})
	d := engineDelta(t, env.e, base, 1, 1)
	wantEnds(t, "engine client", d.Client, 1, ec{rNormal: 1}, ec{rNormal: 1})
	wantEnds(t, "exit", d.Exit, 1, ec{rNormal: 1}, ec{rNormal: 1})
}

// TestConnReasonReset: the destination reads the request and resets. The exit records reset on
// both sides (the failing side's reason is given to the other); the reset should reach the proxy
// client as a reset, not as a clean end of stream.
func TestConnReasonReset(t *testing.T) {
	dst := startServer(t, func(c *net.TCPConn, _ <-chan struct{}) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			_ = c.SetLinger(0)
		}
		c.Close()
	})
	env := newConnEnv(t, "reset", nil, nil)
	base := settled(t, env.e)
	c := mustSocks(t, env.tun.SOCKSAddr(), dst.Addr())
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	readErr, n, _ := readUntilEnd(c, 10*time.Second)
	c.Close()
	d := engineDelta(t, env.e, base, 1, 1)
	cl := env.tunnelStats(t, 1)
	t.Logf("client socket: read %d bytes, then %v; client stats %s; exit %s", n, readErr, fmtStats(cl), fmtStats(d.Exit))
	t.Run("exit", func(t *testing.T) {
		wantEnds(t, "exit", d.Exit, 1, ec{rReset: 1}, ec{rReset: 1})
	})
	t.Run("client", func(t *testing.T) {
		if readErr == io.EOF && ends(cl, messages.SideOutgoing)[rNormal] == 1 {
			t.Fatal("regression: a destination reset reaches the proxy client as a clean EOF and the client tunnel " +
				"records normal/normal: actors/relay.go abort() resets only *net.TCPConn or an aborter, and the " +
				"netstack's *gonet.TCPConn has no Abort, so the exit closes the tunnel stream with a FIN")
		}
		if !errors.Is(readErr, syscall.ECONNRESET) {
			t.Errorf("client socket ended with %v, want ECONNRESET", readErr)
		}
		wantEnds(t, "client", cl, 1, ec{rReset: 1}, ec{rReset: 1})
	})
}

// TestConnReasonTimeout: a proxy client that never sends its greeting (handshake_timeout, its own
// reason since the handshake got its own budget), and a destination whose dial times out on the
// exit (a loopback listener with a full accept queue drops SYNs).
func TestConnReasonTimeout(t *testing.T) {
	t.Run("handshake", func(t *testing.T) {
		env := newConnEnv(t, "tmo-hs", nil, func(s *engine.TunnelSpec) {
			s.Handshake.Timeout = engine.Duration(200 * time.Millisecond)
		})
		c, err := net.Dial("tcp", env.tun.SOCKSAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Send nothing: the proxy gives up after the handshake budget and closes.
		readErr, n, _ := readUntilEnd(c, 10*time.Second)
		if readErr != io.EOF || n != 0 {
			t.Errorf("silent client: read %d bytes, then %v; want a plain EOF", n, readErr)
		}
		wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{messages.EndHandshakeTimeout: 1}, ec{messages.EndHandshakeTimeout: 1})
	})
	t.Run("dial", func(t *testing.T) {
		target, release := blackhole(t)
		defer release()
		env := newConnEnv(t, "tmo-dial", func(c *engine.Config) { c.Exit.ConnectTimeout = engine.Duration(200 * time.Millisecond) }, nil)
		base := settled(t, env.e)
		c, code, err := socksConnect(env.tun.SOCKSAddr(), target)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if code != socksTTLExpired {
			t.Errorf("socks5 reply %#x, want %#x (TTL expired)", code, socksTTLExpired)
		}
		wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{rTimeout: 1}, ec{rTimeout: 1})
		wantEnds(t, "exit", engineDelta(t, env.e, base, 1, 1).Exit, 1, ec{rTimeout: 1}, ec{rTimeout: 1})
	})
}

// blackhole returns a loopback address whose SYNs are dropped: a listener with backlog 0 whose
// accept queue is filled by one connection that is never accepted.
func blackhole(t *testing.T) (string, func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeFD := func() { syscall.Close(fd) }
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		closeFD()
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		closeFD()
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		closeFD()
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		closeFD()
		t.Fatalf("filling the accept queue: %v", err)
	}
	release := func() { filler.Close(); closeFD() }
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		release()
		t.Skip("this kernel does not drop SYNs to a full accept queue; no blackhole on loopback")
	} else if !isTimeoutErr(err) {
		release()
		t.Fatalf("probe dial to the blackhole: %v, want a timeout", err)
	}
	return addr, release
}

// TestConnReasonInactivity: an idle connection ends with inactivity on both client sides; the
// proxy client sees a graceful EOF; the exit sees the FIN go through and ends normally.
func TestConnReasonInactivity(t *testing.T) {
	const idle = 300 * time.Millisecond
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "idle", nil, idleLimits(idle, 200*time.Millisecond))
	base := settled(t, env.e)
	c := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
	defer c.Close()
	if err := roundTrip(c, "ping"); err != nil {
		t.Fatal(err)
	}
	last := time.Now()
	readErr, n, at := readUntilEnd(c, 10*time.Second)
	if readErr != io.EOF || n != 0 {
		t.Fatalf("idle connection: read %d bytes, then %v; want a graceful EOF", n, readErr)
	}
	if d := at.Sub(last); d < idle {
		t.Errorf("ended %v after the last byte, before the %v inactivity timeout", d, idle)
	}
	c.Close()
	wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{rInactivity: 1}, ec{rInactivity: 1})
	wantEnds(t, "exit", engineDelta(t, env.e, base, 1, 1).Exit, 1, ec{rNormal: 1}, ec{rNormal: 1})
}

// TestConnReasonIdleExempt: a target matching IdleExempt stays open well past the inactivity
// timeout, while a connection to another target, idle as long, ends.
func TestConnReasonIdleExempt(t *testing.T) {
	const idle = 300 * time.Millisecond
	exempt, other := startServer(t, echoHandler), startServer(t, echoHandler)
	env := newConnEnv(t, "exempt", nil, func(s *engine.TunnelSpec) {
		idleLimits(idle, 200*time.Millisecond)(s)
		s.Connections.IdleExempt = []string{exempt.Addr()}
	})
	kept := mustSocks(t, env.tun.SOCKSAddr(), exempt.Addr())
	defer kept.Close()
	ctl := mustSocks(t, env.tun.SOCKSAddr(), other.Addr())
	defer ctl.Close()
	for _, c := range []net.Conn{kept, ctl} {
		if err := roundTrip(c, "ping"); err != nil {
			t.Fatal(err)
		}
	}
	last := time.Now()
	if err, n, _ := readUntilEnd(ctl, 10*time.Second); err != io.EOF || n != 0 {
		t.Fatalf("control connection: read %d bytes, then %v; want EOF after the inactivity timeout", n, err)
	}
	// The exempt connection must not end within 3× the inactivity timeout of idleness.
	_ = kept.SetReadDeadline(last.Add(3 * idle))
	if n, err := kept.Read(make([]byte, 1)); !isTimeoutErr(err) {
		t.Fatalf("exempt connection: read %d, %v within %v of idleness; want it still open", n, err, 3*idle)
	}
	_ = kept.SetReadDeadline(time.Time{})
	if err := roundTrip(kept, "still there"); err != nil {
		t.Fatalf("exempt connection after %v idle: %v", time.Since(last), err)
	}
	ctl.Close()
	kept.Close()
	wantEnds(t, "client", env.tunnelStats(t, 2), 2, ec{rInactivity: 1, rNormal: 1}, ec{rInactivity: 1, rNormal: 1})
}

// TestConnReasonMaxLifetime: a connection that keeps moving bytes ends at its maximum lifetime.
func TestConnReasonMaxLifetime(t *testing.T) {
	const lifetime = 300 * time.Millisecond
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "lifetime", nil, func(s *engine.TunnelSpec) {
		s.Connections.MaxLifetime, s.Connections.CloseGrace = engine.Duration(lifetime), engine.Duration(200*time.Millisecond)
	})
	start := time.Now()
	c := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
	defer c.Close()
	tick := time.NewTicker(20 * time.Millisecond) // paces the trickle; synchronises nothing
	defer tick.Stop()
	var err error
	trips := 0
	for ; trips < 500 && err == nil; trips++ {
		<-tick.C
		err = roundTrip(c, "x")
	}
	if err == nil {
		t.Fatalf("connection still relaying after %d round trips (%v)", trips, time.Since(start))
	}
	if d := time.Since(start); d < lifetime {
		t.Errorf("ended after %v, before its %v lifetime", d, lifetime)
	}
	t.Logf("ended after %d round trips, %v: %v", trips, time.Since(start).Round(time.Millisecond), err)
	c.Close()
	wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{rLifetime: 1}, ec{rLifetime: 1})
}

// TestConnReasonLimit: over MaxConnections (and MaxConnectionsPerSource) a SOCKS5 client gets
// reply 0x01 and an HTTP client 503, at once; each refusal is counted as limit.
func TestConnReasonLimit(t *testing.T) {
	echo := startServer(t, echoHandler)
	for _, tc := range []struct {
		name string
		hold int
		spec func(*engine.TunnelSpec)
	}{
		{"max_connections", 2, func(s *engine.TunnelSpec) { s.MaxConnections = 2 }},
		{"max_connections_per_source", 1, func(s *engine.TunnelSpec) { s.MaxConnectionsPerSource = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newConnEnv(t, "limit", nil, tc.spec)
			base := settled(t, env.e)
			var held []net.Conn
			for i := range tc.hold {
				c := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
				defer c.Close()
				if err := roundTrip(c, fmt.Sprint("held ", i)); err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
			}
			c, code, err := socksConnect(env.tun.SOCKSAddr(), echo.Addr())
			if err != nil {
				t.Fatalf("socks5 over the limit: %v", err)
			}
			if code != socksGeneralFailure {
				t.Errorf("socks5 over the limit: reply %#x, want %#x", code, socksGeneralFailure)
			}
			if err, n, _ := readUntilEnd(c, 10*time.Second); err != io.EOF || n != 0 {
				t.Errorf("refused socks5 connection: read %d bytes, then %v; want EOF", n, err)
			}
			c.Close()
			u, _ := url.Parse("http://" + env.tun.HTTPAddr())
			hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := hc.Get("http://" + echo.Addr() + "/")
			if err != nil {
				t.Fatalf("http over the limit: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("http over the limit: status %d, want 503", resp.StatusCode)
			}
			for _, c := range held {
				c.Close()
			}
			n := uint64(tc.hold)
			wantEnds(t, "client", env.tunnelStats(t, n+2), n+2, ec{rLimit: 2, rNormal: n}, ec{rLimit: 2, rNormal: n})
			d := engineDelta(t, env.e, base, n+2, n)
			wantEnds(t, "engine client", d.Client, n+2, ec{rLimit: 2, rNormal: n}, ec{rLimit: 2, rNormal: n})
			wantEnds(t, "exit", d.Exit, n, ec{rNormal: n}, ec{rNormal: n})
		})
	}
}

// TestConnReasonExitSessionLimit: over the exit's max_connections_per_session a SOCKS5 client
// gets reply 0x01 whether its connection went as a direct flow (an address: the exit resets it
// and answers the client's query from past the limit) or through the connect service (a name).
func TestConnReasonExitSessionLimit(t *testing.T) {
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "xlimit", func(c *engine.Config) { c.Exit.MaxConnectionsPerSession = 1 }, nil)
	base := settled(t, env.e)
	held, early := holdWithinExitLimit(t, env.tun.SOCKSAddr(), echo.Addr())
	defer held.Close()
	if err := roundTrip(held, "held"); err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddrPort(echo.Addr()).Port()
	for _, host := range []string{"127.0.0.1", "localhost"} {
		c, code, err := socksRequest(env.tun.SOCKSAddr(), socksCmdConnect, host, port)
		if err != nil {
			t.Fatalf("%s over the exit's limit: %v", host, err)
		}
		c.Close()
		if code != socksGeneralFailure {
			t.Errorf("%s over the exit's limit: reply %#x, want %#x", host, code, socksGeneralFailure)
		}
	}
	held.Close()
	d := engineDelta(t, env.e, base, 3+early, 3+early)
	wantEnds(t, "engine client", d.Client, 3+early, ec{rDialFailed: 2 + early, rNormal: 1}, ec{rDialFailed: 2 + early, rNormal: 1})
	wantEnds(t, "exit", d.Exit, 3+early, ec{rLimit: 2 + early, rNormal: 1}, ec{rLimit: 2 + early, rNormal: 1})

	// A burst over the limit: more refusal queries at once than the exit reads past its limit
	// (16); those it closes unanswered read 0x01 too.
	held, _ = holdWithinExitLimit(t, env.tun.SOCKSAddr(), echo.Addr())
	defer held.Close()
	if err := roundTrip(held, "held again"); err != nil {
		t.Fatal(err)
	}
	const burst = 48
	codes := make(chan byte, burst)
	var wg sync.WaitGroup
	for range burst {
		wg.Go(func() {
			c, code, err := socksConnect(env.tun.SOCKSAddr(), echo.Addr())
			if err != nil {
				t.Errorf("burst: %v", err)
				return
			}
			c.Close()
			codes <- code
		})
	}
	wg.Wait()
	close(codes)
	got := map[byte]int{}
	for c := range codes {
		got[c]++
	}
	if got[socksGeneralFailure] != burst {
		t.Errorf("burst of %d over the exit's limit: replies %v, want all %#x", burst, got, socksGeneralFailure)
	}
}

// holdWithinExitLimit opens a connection to target that the exit's limit of one admits. The slot
// can still be taken for a moment by what just ended there: the leg's first probe (a
// connect-service ping) or the previous connection, until the exit's peer has heard of its end,
// which may come after the tunnel is Up or the engine's stats say none is active. A refusal then
// is retried; early counts them (each ends as a refusal on both sides).
func holdWithinExitLimit(t *testing.T, socks, target string) (*net.TCPConn, uint64) {
	t.Helper()
	var held *net.TCPConn
	var early uint64
	testutil.Eventually(t, 10*time.Second, "a connection within the exit's limit", func() bool {
		c, code, err := socksConnect(socks, target)
		if err != nil {
			t.Fatal(err)
		}
		if code != socksSucceeded {
			c.Close()
			early++
			return false
		}
		held = c
		return true
	})
	return held, early
}

// TestConnReasonPolicyDenied: an exit with the default egress policy refuses loopback.
func TestConnReasonPolicyDenied(t *testing.T) {
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "policy", func(c *engine.Config) { c.Exit.Egress = engine.EgressConfig{} }, nil)
	refusedViaSOCKS(t, env, echo.Addr(), socksNotAllowed, rPolicy)
}

// TestConnReasonDialFailed: nothing listens on the destination port.
func TestConnReasonDialFailed(t *testing.T) {
	env := newConnEnv(t, "dialfail", nil, nil)
	refusedViaSOCKS(t, env, testutil.ClosedAddr(t).String(), socksConnRefused, rDialFailed)
}

// refusedViaSOCKS asks for target through env's SOCKS5 proxy, expects the reply code wantCode, and
// one connection ended with reason why on both sides of the client and of the exit.
func refusedViaSOCKS(t *testing.T, env *connEnv, target string, wantCode byte, why messages.EndReason) {
	t.Helper()
	base := settled(t, env.e)
	c, code, err := socksConnect(env.tun.SOCKSAddr(), target)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if code != wantCode {
		t.Errorf("socks5 reply %#x, want %#x", code, wantCode)
	}
	wantEnds(t, "client", env.tunnelStats(t, 1), 1, ec{why: 1}, ec{why: 1})
	wantEnds(t, "exit", engineDelta(t, env.e, base, 1, 1).Exit, 1, ec{why: 1}, ec{why: 1})
}

// TestConnReasonProtocolError: garbage on the SOCKS5 port and on the HTTP port.
func TestConnReasonProtocolError(t *testing.T) {
	env := newConnEnv(t, "garbage", nil, nil)
	// The SOCKS5 proxy reads the 2-byte greeting, finds no version 5 and closes without a reply;
	// the rest of the request is unread, so the kernel resets rather than FINs.
	for i, tc := range []struct{ addr, send, wantReply string }{
		{env.tun.SOCKSAddr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{env.tun.HTTPAddr(), "\x05\x01\x00 garbage\r\n\r\n", "HTTP/1.1 400"},
	} {
		c, err := net.Dial("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, tc.send); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if tc.wantReply == "" && errors.Is(err, syscall.ECONNRESET) {
			err = nil
		}
		if err != nil || !strings.HasPrefix(string(got), tc.wantReply) || (tc.wantReply == "" && len(got) != 0) {
			t.Errorf("garbage %d: reply %q, %v; want %q then EOF", i, got, err, tc.wantReply)
		}
		wantEnds(t, "client", env.tunnelStats(t, uint64(i+1)), uint64(i+1), ec{rProtocol: uint64(i + 1)}, ec{rProtocol: uint64(i + 1)})
	}
}

// TestConnReasonClientResetAfterHalfClose: a proxy client sends its request, half-closes, and resets
// the connection in the middle of the response (a cancelled download). Its side reset: the client
// tunnel should record reset, not normal — the response was not delivered.
func TestConnReasonClientResetAfterHalfClose(t *testing.T) {
	dst := startServer(t, func(c *net.TCPConn, done <-chan struct{}) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			streamHandler(c, done)
		}
	})
	env := newConnEnv(t, "cancel", nil, nil)
	c := mustSocks(t, env.tun.SOCKSAddr(), dst.Addr())
	defer c.Close()
	if _, err := io.WriteString(c, "GET /big"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
		t.Fatalf("response: %v", err)
	}
	_ = c.SetLinger(0)
	c.Close()
	st := env.tunnelStats(t, 1)
	if ends(st, messages.SideIncoming)[rNormal] == 1 {
		t.Fatalf("regression: a download cancelled by a reset after the client's half-close is recorded as %s: "+
			"actors/connection.go pumpEnded drops the write error on a side already recorded normal (its EOF) "+
			"and then records both sides normal", fmtStats(st))
	}
	wantEnds(t, "client", st, 1, ec{rReset: 1}, ec{rReset: 1})
}
