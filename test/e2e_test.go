package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

func socksClient(t testing.TB, tun *engine.Tunnel) *http.Client {
	return proxyClient(tun, 2*time.Minute)
}

func httpProxyClient(t testing.TB, tun *engine.Tunnel) *http.Client {
	u, _ := url.Parse("http://" + tun.HTTPAddr())
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 2 * time.Minute}
}

func download(c *http.Client, base string, seed uint64, n int64) error {
	return fetchPayload(c, base, seed, n, func(body io.Reader) error { return testutil.CheckPayload(body, seed, n) })
}

// fetchPayload asks the payload server at base for Payload(seed, n) and hands a 200's body to check.
func fetchPayload(c *http.Client, base string, seed uint64, n int64, check func(io.Reader) error) error {
	resp, err := c.Get(fmt.Sprintf("%s/data?seed=%d&n=%d", base, seed, n))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return check(resp.Body)
}

func upload(c *http.Client, base string, seed uint64, n int64) error {
	req, _ := http.NewRequest(http.MethodPost, base+"/sum", testutil.Payload(seed, n))
	req.ContentLength = n
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf("%s %d", testutil.PayloadSum(seed, n), n); string(body) != want {
		return fmt.Errorf("server received %q, want %q", body, want)
	}
	return nil
}

// TestBulkTransfer moves 64 MiB each way through each proxy and compares sha256 at both ends.
func TestBulkTransfer(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	e := startExitEngine(t, "bulk", nil)
	tun := openTunnel(t, e, "bulk")
	const n = 64 << 20
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"socks5", socksClient(t, tun)}, {"http", httpProxyClient(t, tun)}} {
		t.Run(c.name+"/download", func(t *testing.T) {
			if err := download(c.client, srv.URL, 1, n); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(c.name+"/upload", func(t *testing.T) {
			if err := upload(c.client, srv.URL, 2, n); err != nil {
				t.Fatal(err)
			}
		})
	}
	// CONNECT through the HTTP proxy: a raw tunnel, not a rewritten request.
	t.Run("http-connect", func(t *testing.T) {
		u, _ := url.Parse("http://" + tun.HTTPAddr())
		tr := &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}
		tr.DialContext = nil
		srvTLS := newPayloadServerTLS()
		defer srvTLS.Close()
		tr.TLSClientConfig = srvTLS.Client().Transport.(*http.Transport).TLSClientConfig
		c := &http.Client{Transport: tr, Timeout: time.Minute}
		if err := download(c, srvTLS.URL, 3, 8<<20); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConcurrentConnections runs 200 connections at once through one tunnel, half through each proxy.
func TestConcurrentConnections(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	e := startExitEngine(t, "many", nil)
	tun := openTunnel(t, e, "many")
	clients := []*http.Client{socksClient(t, tun), httpProxyClient(t, tun)}
	const conns, size = 200, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := download(clients[i%2], srv.URL, uint64(1000+i), size+int64(i)); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		if failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d connections failed", failed, conns)
	}
	// Every one ended normally on both sides — plain-HTTP ones included, whose connection ends
	// with the response (one request per connection).
	var st messages.ConnectionStats
	waitFor(t, 10*time.Second, "the tunnel to count every connection", func() bool {
		st, _ = tun.Stats(context.Background())
		return st.Ended >= conns
	})
	for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
		if n := st.ByEnd[side][messages.EndNormal]; n != conns {
			t.Errorf("%s normal = %d of %d: %v", side, n, conns, st.ByEnd[side])
		}
	}
}

func TestPortConflictFailsOpenAtOnce(t *testing.T) {
	e := startExitEngine(t, "conflict", nil)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = e.OpenTunnel(ctx, engine.TunnelSpec{Exit: "conflict", SOCKS: busy.Addr().String(), HTTP: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("OpenTunnel succeeded on a port in use")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("error %q does not name the address in use", err)
	}
	// Bound only to show no timeout is involved: the bind fails synchronously.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("port conflict took %v to report", d)
	}
	// The failed open left nothing bound: the HTTP port was released and a new tunnel opens.
	tun := openTunnel(t, e, "conflict")
	if tun.SOCKSAddr() == "" {
		t.Fatal("no SOCKS address")
	}
}

func TestEgressPolicyRefusal(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	// This exit keeps the default policy: loopback and private ranges are refused.
	e := startExitEngine(t, "strict", func(c *engine.Config) { c.Exit.Egress = engine.EgressConfig{} })
	tun := openTunnel(t, e, "strict")
	target := strings.TrimPrefix(srv.URL, "http://")

	d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{target, "localhost:80", "10.1.2.3:80", "169.254.169.254:80", "100.64.0.1:80", "[::1]:80"} {
		c, err := d.Dial("tcp", dst)
		if err == nil {
			c.Close()
			t.Fatalf("SOCKS5 dial %s succeeded", dst)
		}
		if !strings.Contains(err.Error(), "not allowed") {
			t.Fatalf("SOCKS5 dial %s: %v, want reply 0x02 (not allowed by ruleset)", dst, err)
		}
	}
	resp, err := httpProxyClient(t, tun).Get(srv.URL + "/data?seed=1&n=10")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("HTTP proxy status %d, want 403", resp.StatusCode)
	}
	// CONNECT too.
	c, err := net.Dial("tcp", tun.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 12)
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "HTTP/1.1 403" {
		t.Fatalf("CONNECT reply %q, %v", line, err)
	}
}

func TestUnknownExitFailsWithinDeadline(t *testing.T) {
	e := startExitEngine(t, "known", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := e.OpenTunnel(ctx, engine.TunnelSpec{Exit: "nobody-home", SOCKS: "127.0.0.1:0"})
	if !errors.Is(err, engine.ErrExitUnreachable) {
		t.Fatalf("err %v, want ErrExitUnreachable", err)
	}
	if d := time.Since(start); d > 3*time.Second+500*time.Millisecond {
		t.Fatalf("OpenTunnel took %v, beyond its 3s deadline", d)
	}
}

// TestEventsAndInfo checks the transitions of a tunnel's life and ErrTunnelClosed after close.
func TestEventsAndInfo(t *testing.T) {
	e := startExitEngine(t, "events", nil)
	tun := openTunnel(t, e, "events")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := tun.Info(ctx)
	if err != nil || info.State != messages.StateUp || len(info.ClientAddresses) != 1 {
		t.Fatalf("info %+v, %v", info, err)
	}
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tun.Info(ctx); !errors.Is(err, engine.ErrTunnelClosed) {
		info, _ := tun.Info(ctx)
		t.Fatalf("Info after Close: %v, want ErrTunnelClosed; info %+v", err, info)
	}
	if err := tun.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var got []string
	want := "negotiating>handshaking handshaking>up up>draining draining>closing closing>closed"
	deadline := time.After(10 * time.Second)
	for strings.Join(got, " ") != want {
		select {
		case ev := <-e.Events():
			if ev.Kind == engine.EventTunnelState && ev.Tunnel == tun.ID() {
				got = append(got, string(ev.From)+">"+string(ev.To))
			}
		case <-deadline:
			t.Fatalf("transitions %v, want %s", got, want)
		}
	}
}
