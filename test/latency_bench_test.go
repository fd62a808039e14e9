package test

// Connection latency through a chain (issue 17), the same two chains as BenchmarkChain (warren:
// Warren's tunnel and exit; stock: stock parts only, stock_chain_test.go):
//
//	go test ./test -run '^$' -bench BenchmarkConnectLatency -benchtime 2000x
//
// Each op, one at a time: dial the SOCKS5 proxy, CONNECT to an echo server on 127.0.0.1, write 1
// byte, read it back, close. It is timed from before the dial to after the byte is read (the close
// is not in it): the SOCKS5 exchange, the TCP handshake inside the tunnel, the exit's dial of the
// echo server and one round trip of data. p50-µs, p99-µs and mean-µs are over the timed ops; a few
// connections first warm both chains up (the tunnel's handshake is done by then anyway).
//
// Two ways to close, each a sub-benchmark of both chains:
//   - back-to-back: the client closes and dials the next at once, so the previous connection's
//     teardown (its FINs through the chain, its sockets' and actors' ends) runs during the next
//     one's setup: latency under a steady churn of about a thousand connections a second, which
//     keeps two cores busy;
//   - idle: the client half-closes and reads until the chain's FIN comes back from the echo
//     server (untimed) before it dials the next: a connection opened on an otherwise idle tunnel.

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/netstack"
)

const (
	latencyWarmup = 10               // untimed connections before the timed ones
	latencyBound  = 10 * time.Second // bounds each connection: dial, exchange and all
)

// latencyModes are runLatency's two ways of closing, as sub-benchmark names.
var latencyModes = []struct {
	name string
	idle bool
}{{"back-to-back", false}, {"idle", true}}

func BenchmarkConnectLatency(b *testing.B) {
	for _, m := range latencyModes {
		b.Run("warren/"+m.name, func(b *testing.B) {
			echo := testutil.EchoServer(b)
			e := startExitEngine(b, "latency", nil)
			tun := openTunnel(b, e, "latency")
			runLatency(b, tun.SOCKSAddr(), echo.Addr(), m.idle)
		})
		b.Run("stock/"+m.name, func(b *testing.B) {
			echo := testutil.EchoServer(b)
			runLatency(b, stockChain(b, echo.Addr()), echo.Addr(), m.idle)
		})
	}
}

// runLatency times b.N connections through the SOCKS5 proxy at socks to target, an echo server,
// one after another, and reports their quantiles and mean; idle: each closed gracefully first.
func runLatency(b *testing.B, socks, target string, idle bool) {
	raw := &lastConn{}
	d, err := proxy.SOCKS5("tcp", socks, nil, raw)
	if err != nil {
		b.Fatal(err)
	}
	cd := d.(proxy.ContextDialer)
	for i := range latencyWarmup {
		if _, err := echoOnce(cd, raw, target, byte(i), idle); err != nil {
			b.Fatalf("warm-up %d: %v", i, err)
		}
	}
	took := make([]time.Duration, 0, b.N)
	segs0 := netstack.ReadTCPStats().SegmentsSent
	b.ResetTimer()
	for i := range b.N {
		t, err := echoOnce(cd, raw, target, byte(i), idle)
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		took = append(took, t)
	}
	b.StopTimer()
	segs := netstack.ReadTCPStats().SegmentsSent - segs0
	slices.Sort(took)
	var sum time.Duration
	for _, t := range took {
		sum += t
	}
	us := func(t time.Duration) float64 { return float64(t.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(quantile(took, 0.5)), "p50-µs")
	b.ReportMetric(us(quantile(took, 0.99)), "p99-µs")
	b.ReportMetric(us(sum)/float64(len(took)), "mean-µs")
	if segs > 0 { // Warren's stacks count; the stock chain's do not
		b.ReportMetric(float64(segs)/float64(b.N), "segments/op")
	}
}

// lastConn dials TCP and keeps the last connection it made: the SOCKS5 client's own socket, which
// the connection it returns wraps (for CloseWrite). Connections are made one at a time.
type lastConn struct {
	net.Dialer
	c *net.TCPConn
}

func (l *lastConn) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := l.Dialer.DialContext(ctx, network, addr)
	if err == nil {
		l.c = c.(*net.TCPConn)
	}
	return c, err
}

func (l *lastConn) Dial(network, addr string) (net.Conn, error) {
	return l.DialContext(context.Background(), network, addr)
}

// echoOnce opens a connection to target through d, writes v, reads it back and closes; it returns
// the time from before the dial to after the byte was read. idle: before closing, it half-closes
// raw's socket and reads until the end of the stream comes back through the chain.
func echoOnce(d proxy.ContextDialer, raw *lastConn, target string, v byte, idle bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), latencyBound)
	defer cancel()
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(latencyBound))
	if _, err := c.Write([]byte{v}); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	var got [1]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	took := time.Since(start)
	if got[0] != v {
		return 0, fmt.Errorf("echo: got %d, want %d", got[0], v)
	}
	if idle {
		if err := raw.c.CloseWrite(); err != nil {
			return 0, fmt.Errorf("half-close: %w", err)
		}
		if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
			return 0, fmt.Errorf("after the half-close: %d bytes, %v; want the end of the stream", n, err)
		}
	}
	return took, nil
}
