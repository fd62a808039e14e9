package test

// Half-close, graceful-then-forced ends, and the byte counts of the "connection ended" log line.

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// received is what a destination got before EOF.
type received struct {
	sum string
	n   int64
	err error
}

// requestResponseHandler reads the request to EOF, reports its sha256 and length, then writes the
// payload (seed, n) and closes.
func requestResponseHandler(got chan<- received, seed uint64, n int64) func(*net.TCPConn, <-chan struct{}) {
	return func(c *net.TCPConn, done <-chan struct{}) {
		sum, m, err := testutil.Sum(c)
		select {
		case got <- received{sum, m, err}:
		case <-done:
			return
		}
		if err == nil {
			_, _ = io.Copy(c, testutil.Payload(seed, n))
		}
	}
}

// upDown sends the payload (upSeed, up) through c, half-closes, and returns the sha256 and length of
// everything received until EOF; the destination is requestResponseHandler.
func upDown(t testing.TB, c *net.TCPConn, got <-chan received, upSeed uint64, up int64) (string, int64) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(c, testutil.Payload(upSeed, up)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	r := testutil.Await(t, got, time.Minute, "the destination to receive the request's EOF")
	if r.err != nil || r.n != up || r.sum != testutil.PayloadSum(upSeed, up) {
		t.Fatalf("destination received %d bytes sha256 %s (%v), want %d bytes sha256 %s", r.n, r.sum, r.err, up, testutil.PayloadSum(upSeed, up))
	}
	sum, n, err := testutil.Sum(c)
	if err != nil {
		t.Fatalf("download after %d bytes: %v", n, err)
	}
	return sum, n
}

// TestConnHalfCloseRoundTrip: the client half-closes after its request; the destination reads to
// EOF and only then answers with 1 MiB, which arrives complete; both sides end normal.
func TestConnHalfCloseRoundTrip(t *testing.T) {
	const up, down = 64<<10 + 3, 1 << 20
	got := make(chan received, 1)
	dst := startServer(t, requestResponseHandler(got, 42, down))
	env := newConnEnv(t, "halfclose", nil, nil)
	base := settled(t, env.e)
	c := mustSocks(t, env.tun.SOCKSAddr(), dst.Addr())
	defer c.Close()
	sum, n := upDown(t, c, got, 41, up)
	if n != down || sum != testutil.PayloadSum(42, down) {
		t.Fatalf("client received %d bytes sha256 %s, want %d bytes sha256 %s", n, sum, down, testutil.PayloadSum(42, down))
	}
	c.Close()
	st := env.tunnelStats(t, 1)
	wantEnds(t, "client", st, 1, ec{rNormal: 1}, ec{rNormal: 1})
	if st.Bytes.In != up || st.Bytes.Out != down {
		t.Errorf("client bytes in/out %d/%d, want %d/%d", st.Bytes.In, st.Bytes.Out, up, down)
	}
	wantEnds(t, "exit", engineDelta(t, env.e, base, 1, 1).Exit, 1, ec{rNormal: 1}, ec{rNormal: 1})
}

// TestConnGracefulThenForced: an inactive connection whose destination never closes its side. The
// proxy client first gets a FIN (its read returns EOF while its socket is in CLOSE_WAIT); after the
// close grace both sockets are reset (the client's socket goes to CLOSE) and the actor ends. The
// bounds are generous and only show that no other timeout is involved: the end comes no sooner than
// the grace period after the FIN, and within inactivity + grace + 3 s of the last byte.
func TestConnGracefulThenForced(t *testing.T) {
	const idle, grace = 300 * time.Millisecond, time.Second
	got := make(chan string, 4)
	dst := startServer(t, func(c *net.TCPConn, done <-chan struct{}) {
		recordHandler(got)(c, done) // reads to EOF, never writes
		<-done                      // and never closes its side
	})
	env := newConnEnv(t, "forced", nil, idleLimits(idle, grace))
	c := mustSocks(t, env.tun.SOCKSAddr(), dst.Addr())
	defer c.Close()
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, got, "hello")
	last := time.Now()
	err, n, finAt := readUntilEnd(c, 10*time.Second)
	if err != io.EOF || n != 0 {
		t.Fatalf("read %d bytes, then %v; want EOF (FIN first)", n, err)
	}
	if st, err := tcpState(c); err != nil || st != tcpStateCloseWait {
		t.Fatalf("client socket state %d (%v) right after EOF, want CLOSE_WAIT (%d): a FIN, not a reset", st, err, tcpStateCloseWait)
	}
	st := env.tunnelStats(t, 1)
	endAt := time.Now()
	wantEnds(t, "client", st, 1, ec{rInactivity: 1}, ec{rInactivity: 1})
	if !testutil.Until(pollFor, func(context.Context) bool { s, err := tcpState(c); return err == nil && s == tcpStateClose }) {
		s, err := tcpState(c)
		t.Errorf("client socket state %d (%v) after the grace period, want CLOSE (%d): reset", s, err, tcpStateClose)
	}
	t.Logf("FIN %v after the last byte, end %v after the FIN", finAt.Sub(last).Round(time.Millisecond), endAt.Sub(finAt).Round(time.Millisecond))
	if d := finAt.Sub(last); d < idle {
		t.Errorf("FIN %v after the last byte, before the %v inactivity timeout", d, idle)
	}
	if d := endAt.Sub(finAt); d < grace/2 {
		t.Errorf("ended %v after the FIN: sooner than the %v grace period allows", d, grace)
	}
	if d := endAt.Sub(last); d > idle+grace+3*time.Second {
		t.Errorf("ended %v after the last byte, beyond inactivity %v + grace %v + 3 s", d, idle, grace)
	}
}

// TestConnLogByteCounts: the "connection ended" line of each role reports bytes_in = what the
// destination received and bytes_out = what the proxy client received.
func TestConnLogByteCounts(t *testing.T) {
	const up, down = 3<<20 + 17, 2<<20 + 5
	got := make(chan received, 1)
	dst := startServer(t, requestResponseHandler(got, 52, down))
	logs := newLogCapture()
	env := newConnEnv(t, "logbytes", func(c *engine.Config) { c.Logger = logs.logger() }, nil)
	c := mustSocks(t, env.tun.SOCKSAddr(), dst.Addr())
	defer c.Close()
	sum, n := upDown(t, c, got, 51, up)
	if n != down || sum != testutil.PayloadSum(52, down) {
		t.Fatalf("client received %d bytes sha256 %s, want %d bytes sha256 %s", n, sum, down, testutil.PayloadSum(52, down))
	}
	c.Close()
	for _, r := range []string{"client", "exit"} {
		recs := logs.waitEnded(t, r+" log line", 1, role(r))
		if len(recs) != 1 {
			t.Fatalf("%d %s log lines, want 1: %v", len(recs), r, recs)
		}
		l := recs[0]
		if l.int("bytes_in") != up || l.int("bytes_out") != down || l.str("incoming") != "normal" || l.str("outgoing") != "normal" {
			t.Errorf("%s log line %v: want bytes_in=%d bytes_out=%d, normal/normal", r, l, up, down)
		}
		if want := dst.Addr(); l.str("target") != want {
			t.Errorf("%s log line target %q, want %q", r, l.str("target"), want)
		}
		// The client's source is the proxy client's address; the exit's, the client's tunnel
		// address (the connection came as a direct flow, whose source its SYN named).
		if src, err := netip.ParseAddrPort(l.str("source")); err != nil || (r == "client") != (src.String() == c.LocalAddr().String()) ||
			(r == "exit" && !strings.HasPrefix(src.Addr().String(), "10.77.")) {
			t.Errorf("%s log line source %q: want the proxy client's %s (client) or a tunnel address (exit)", r, l.str("source"), c.LocalAddr())
		}
	}
	if st := env.tunnelStats(t, 1); st.Bytes.In != up || st.Bytes.Out != down {
		t.Errorf("client stats bytes %d/%d, want %d/%d", st.Bytes.In, st.Bytes.Out, up, down)
	}
}
