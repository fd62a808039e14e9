package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestWaitOnStart: with nats.wait_on_start, an exit engine and a client engine start while their
// NATS server is not up yet (on a port reserved for it); NATSStatus says they are not connected,
// Ping still answers, and a tunnel started with StartTunnel waits in Reconnecting. Once the server
// starts on that port, both connect, the exit serves, and the tunnel comes Up and carries data.
func TestWaitOnStart(t *testing.T) {
	var srv *server.Server
	t.Cleanup(func() { // registered first, so it runs after the engines have closed
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	port := testutil.ClosedAddr(t).Port()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	nc := NATSConfig{URLs: []string{url}, WaitOnStart: true}
	x := startTestEngine(t, Config{NATS: nc, Exit: &ExitConfig{ID: "wait-x", Listen: "127.0.0.1:0", Egress: EgressConfig{AllowLoopback: true}, Open: true}})
	c := startTestEngine(t, Config{NATS: nc, Trust: TrustConfig{AnyExit: true}})
	ctx := testCtx(t)
	for _, e := range []*Engine{x, c} {
		if st := e.NATSStatus(); st.Connected || st.URL != url || st.Since.IsZero() {
			t.Fatalf("NATS status before the server is up: %+v", st)
		}
		if e.StartedAt().IsZero() || e.StartedAt().Before(e.NATSStatus().Since) {
			t.Fatalf("started at %v; NATS status since %v", e.StartedAt(), e.NATSStatus().Since)
		}
		if err := e.Ping(ctx); err != nil {
			t.Fatalf("Ping while NATS is down: %v", err)
		}
	}
	tun, err := c.StartTunnel(ctx, TunnelSpec{Name: "w", Exit: "wait-x", HTTP: "127.0.0.1:0", UDPBind: "127.0.0.1",
		HandshakeTimeout: Duration(time.Second), Health: HealthConfig{BackoffMin: Duration(100 * time.Millisecond), BackoffMax: Duration(500 * time.Millisecond)}})
	if err != nil {
		t.Fatalf("StartTunnel with NATS down: %v", err)
	}
	nextEvent(t, c, 10*time.Second, func(ev Event) bool { return ev.Kind == EventTunnelState && ev.To == messages.StateReconnecting })

	before := time.Now()
	opts := natstest.DefaultTestOptions
	opts.Host, opts.Port = "127.0.0.1", int(port)
	srv = natstest.RunServer(&opts)
	testutil.Poll(t, 15*time.Second, "the tunnel up once NATS is", tun.Info, func(i TunnelInfo) bool { return i.State == messages.StateUp })
	for _, e := range []*Engine{x, c} {
		if st := e.NATSStatus(); !st.Connected || st.URL != url || st.Since.Before(before) {
			t.Fatalf("NATS status once the server is up: %+v (started it at %v)", st, before)
		}
	}
	echo := testutil.EchoServer(t)
	conn := connectVia(t, tun.HTTPAddr(), echo.Addr())
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("waited")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := conn.Read(buf); err != nil || string(buf) != "waited" {
		t.Fatalf("echo through the tunnel: %q, %v", buf, err)
	}
}

// TestPingAndStatus: Ping answers for a running engine (and its exit), and says why it cannot
// before Start and after Close; NATSStatus of an engine on its embedded server is connected.
func TestPingAndStatus(t *testing.T) {
	e, err := New(Config{Exit: &ExitConfig{ID: "ping-x", Listen: "127.0.0.1:0", Open: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := e.Ping(ctx); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Ping before Start: %v", err)
	}
	if st := e.NATSStatus(); st != (NATSStatus{}) || !e.StartedAt().IsZero() {
		t.Fatalf("before Start: %+v, started at %v", st, e.StartedAt())
	}
	before := time.Now()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if st := e.NATSStatus(); !st.Connected || st.URL == "" || st.Since.Before(before) || e.StartedAt().Before(st.Since) {
		t.Fatalf("NATS status: %+v, started at %v", st, e.StartedAt())
	}
	if err := e.DrainExit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Ping(ctx); err != nil { // a drained exit is gone on purpose
		t.Fatalf("Ping once the exit drained: %v", err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Ping(ctx); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
}
