package test

// Which reason an owner gives the connections it ends (endWith): a Tunnel.Close whose context runs
// out cuts the drain short and ends them with tunnel_closed (the engine is not shutting down); an
// engine's shutdown ends its client connections and its exit's connections with engine_shutdown.

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// TestCloseReasonOutOfTime: Close with a 30 s drain and a 300 ms context. The drain is cut short
// when the context ends: the connection still open is reset and recorded tunnel_closed on both
// sides, never engine_shutdown, and Close returns an error once the tunnel is gone.
func TestCloseReasonOutOfTime(t *testing.T) {
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "outoftime", nil, nil)
	base := settled(t, env.e)
	c := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
	defer c.Close()
	if err := roundTrip(c, "before close"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	start := time.Now()
	err := env.tun.Close(ctx, engine.WithDrainTimeout(30*time.Second))
	cancel()
	took := time.Since(start)
	if err == nil { // the context's error, or the wait's own timeout (it ends with the context)
		t.Error("Close returned nil although the drain (30 s) outlasted its context (300 ms)")
	}
	if took > 5*time.Second {
		t.Errorf("Close took %v after its context (300 ms) ended; the drain (30 s) was not cut short", took)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := env.tun.Stats(ctx); !errors.Is(err, engine.ErrTunnelClosed) {
		t.Errorf("Tunnel.Stats after Close: %v, want ErrTunnelClosed (Close returns once the tunnel is gone)", err)
	}
	if readErr, _, _ := readUntilEnd(c, 10*time.Second); !errors.Is(readErr, syscall.ECONNRESET) {
		t.Errorf("proxy client after the drain was cut short: %v, want ECONNRESET", readErr)
	}
	d := engineDelta(t, env.e, base, 1, 1)
	wantEnds(t, "engine client", d.Client, 1, ec{rTunnel: 1}, ec{rTunnel: 1})
	t.Logf("exit side: %s", fmtStats(d.Exit))
	for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
		if ends(d.Exit, side)[rShutdown] != 0 {
			t.Errorf("exit side recorded engine_shutdown (%s) although no engine shut down", fmtStats(d.Exit))
		}
	}
}

// TestCloseReasonEngineShutdown: engine A is an exit and has a tunnel to exit B on engine B, which
// has a tunnel to A. With a connection through each, A's Close runs out of time (its tunnel's drain
// is a minute): its tunnel is closed with no drain and its exit ended, and both its connections —
// the client side of one, the exit side of the other — record engine_shutdown. The engines' other
// sides (on B, which stays up) are told nothing by A and record no engine_shutdown.
func TestCloseReasonEngineShutdown(t *testing.T) {
	echo := startServer(t, echoHandler)
	logA, logB := newLogCapture(), newLogCapture()
	engB := startExitEngine(t, "b", func(c *engine.Config) { c.Logger = logB.logger(); listenTCP(c) })
	cfg := engine.Config{Logger: logA.logger(), NATS: engine.NATSConfig{URLs: []string{engB.NATSURL()}},
		Exit: &engine.ExitConfig{ID: "a", Listen: "127.0.0.1:0", Egress: engine.EgressConfig{AllowLoopback: true}}}
	trustTestBus(&cfg)
	engA, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := engA.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the test closes it, expecting an error; this covers a test that stopped early
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = engA.Close(ctx)
		failOnPanics(t, engA)
	})
	tunAB := openTunnelSpec(t, engA, engine.TunnelSpec{Exit: "b", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
		DrainTimeout: engine.Duration(time.Minute)})
	tunBA := openTunnelSpec(t, engB, engine.TunnelSpec{Exit: "a", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1"})
	baseB := settled(t, engB)
	c1 := mustSocks(t, tunAB.SOCKSAddr(), echo.Addr()) // client side on A, exit side on B
	defer c1.Close()
	c2 := mustSocks(t, tunBA.SOCKSAddr(), echo.Addr()) // client side on B, exit side on A
	defer c2.Close()
	for _, c := range []net.Conn{c1, c2} {
		if err := roundTrip(c, "before shutdown"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	err = engA.Close(ctx)
	cancel()
	if err == nil {
		t.Error("engine A's Close returned nil although its tunnel's drain (1 min) outlasted its context (500 ms)")
	}
	client := logA.waitEnded(t, "engine A's client connection", 1, role("client"))
	exit := logA.waitEnded(t, "engine A's exit connection", 1, role("exit"))
	for _, recs := range [][]logRecord{client, exit} {
		if len(recs) != 1 || recs[0].str("incoming") != string(rShutdown) || recs[0].str("outgoing") != string(rShutdown) {
			t.Errorf("engine A's log lines %v, want one with incoming=outgoing=%s", recs, rShutdown)
		}
	}
	if readErr, _, _ := readUntilEnd(c1, 10*time.Second); !errors.Is(readErr, syscall.ECONNRESET) {
		t.Errorf("proxy client on A after its forced shutdown: %v, want ECONNRESET", readErr)
	}
	d := engineDelta(t, engB, baseB, 1, 1)
	t.Logf("engine B: client %s; exit %s", fmtStats(d.Client), fmtStats(d.Exit))
	for who, st := range map[string]messages.ConnectionStats{"client": d.Client, "exit": d.Exit} {
		for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
			if ends(st, side)[rShutdown] != 0 {
				t.Errorf("engine B's %s side recorded engine_shutdown (%s) although B did not shut down", who, fmtStats(st))
			}
		}
	}
}
