package test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// TestCloseLeavesNothing runs a whole life — engine, exit, tunnel, traffic — and checks that
// Engine.Close leaves no goroutine behind and closes Events.
func TestCloseLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := newPayloadServer()
	e := startEngineNoCleanup(t)
	tun := openTunnel(t, e, "leak")
	if err := download(socksClient(t, tun), srv.URL, 7, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := download(httpProxyClient(t, tun), srv.URL, 8, 1<<20); err != nil {
		t.Fatal(err)
	}
	assoc := liveAssociation(t, tun) // still open when the engine closes
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.AwaitClosed(t, e.Events(), 10*time.Second, "Events to close after Close returned")
	assoc.Close()
}

// liveAssociation opens a SOCKS5 UDP association through tun and proves it with one datagram
// answered by hand (no server goroutine that the leak check would see); the caller closes it.
func liveAssociation(t *testing.T, tun *engine.Tunnel) *testutil.SOCKS5UDP {
	t.Helper()
	dst, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := testutil.DialSOCKS5UDP(ctx, tun.SOCKSAddr(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	_ = dst.SetDeadline(time.Now().Add(10 * time.Second))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if _, err := c.WriteTo([]byte("ping"), dst.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	n, from, err := dst.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("destination got %q, %v", buf[:n], err)
	}
	if _, err := dst.WriteTo([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	if n, _, err = c.ReadFrom(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("client got %q, %v", buf[:n], err)
	}
	return c
}

// TestPoolCloseLeavesNothing: a pool on an engine that is also its exit (a private bus) carries
// traffic; Pool.Close closes every slot's ports and tunnel while the engine goes on; Engine.Close
// then leaves no goroutine behind.
func TestPoolCloseLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := newPayloadServer()
	defer srv.Close()
	e := startEngineNoCleanup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := pool.Config{Size: 5, SOCKSPorts: testutil.FreePortRange(t, 5)}
	cfg.Tunnel.UDPBind = "127.0.0.1"
	p, err := pool.Open(ctx, e, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	slots, err := p.Slots(ctx)
	if err != nil || len(slots) != 5 {
		t.Fatalf("Slots: %d, %v", len(slots), err)
	}
	for _, s := range slots {
		if s.State != messages.SlotUp || s.Exit != "leak" {
			t.Fatalf("slot %d: %s on %q (%s), want up on leak", s.Index, s.State, s.Exit, s.Cause)
		}
		u, _ := url.Parse("socks5h://" + s.SOCKSAddr)
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: time.Minute}
		if err := download(c, srv.URL, uint64(s.Index), 64<<10); err != nil {
			t.Fatalf("slot %d: %v", s.Index, err)
		}
	}
	if err := p.Close(ctx, 0); err != nil {
		t.Fatalf("Pool.Close: %v", err)
	}
	for _, s := range slots {
		if c, err := net.DialTimeout("tcp", s.SOCKSAddr, time.Second); err == nil {
			c.Close()
			t.Errorf("slot %d's port %s still accepts after Pool.Close", s.Index, s.SOCKSAddr)
		}
	}
	if _, err := p.Slots(ctx); !errors.Is(err, pool.ErrClosed) {
		t.Errorf("Slots after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(ctx, 0); err != nil {
		t.Errorf("second Pool.Close: %v", err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.AwaitClosed(t, e.Events(), 10*time.Second, "Events to close after Close returned")
}

// TestWaitingEngineLeavesNothing: an engine started with nats.wait_on_start before its NATS server
// exists, with a tunnel started (StartTunnel) that keeps trying, closes leaving no goroutine: not
// nats.go's connect loop, nor the tunnel's accept loops and retries.
func TestWaitingEngineLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	url := "nats://" + testutil.ClosedAddr(t).String()
	e, err := engine.New(engine.Config{Logger: testLogger(), NATS: engine.NATSConfig{URLs: []string{url}, WaitOnStart: true},
		Trust: engine.TrustConfig{AnyExit: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatalf("Start with NATS down: %v", err)
	}
	ev := watchTunnel(e)
	spec := startSpec("waits", "nowhere", 200*time.Millisecond)
	spec.Health.ReconnectWait = engine.Duration(200 * time.Millisecond)
	tun, err := e.StartTunnel(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ev.await(t, within, stRcn, stFail, stClg)
	if c, code, err := socksConnect(tun.SOCKSAddr(), "127.0.0.1:9"); err == nil { // parked, then refused: nothing is up
		c.Close()
		if code == socksSucceeded {
			t.Fatal("a proxy connection succeeded through a tunnel that never came up")
		}
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.AwaitClosed(t, e.Events(), 10*time.Second, "Events to close after Close returned")
}
