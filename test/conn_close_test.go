package test

// End reasons given by the owners of connections: a tunnel closed with a drain (drain_timeout), a
// session lost under a tunnel (tunnel_closed), an engine shutting down (engine_shutdown).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// waitTunnelState waits for the tunnel's transition into state on e.Events().
func waitTunnelState(t testing.TB, e *engine.Engine, tunnelID string, to messages.TunnelState) {
	t.Helper()
	testutil.AwaitMatch(t, e.Events(), pollFor, fmt.Sprintf("tunnel %s to go %s", tunnelID, to), func(ev engine.Event) bool {
		return ev.Kind == engine.EventTunnelState && ev.Tunnel == tunnelID && ev.To == to
	})
}

// TestConnReasonDrainTimeout: Tunnel.Close drains. New connections are refused at once; one that
// finishes within the drain ends normally; one still open when the drain runs out ends with
// drain_timeout, gracefully (its client sees EOF). The close grace is 2 s, not shorter: the exit's
// half of the graceful end (the destination's EOF, then its FIN back through the tunnel) must come
// back within it for the exit to count both ends normal; under a loaded -race run, with 200 ms,
// the exit's half once ended tunnel_closed instead.
func TestConnReasonDrainTimeout(t *testing.T) {
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "drain", nil, idleLimits(time.Minute, 2*time.Second))
	base := settled(t, env.e)
	finishing := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
	defer finishing.Close()
	staying := mustSocks(t, env.tun.SOCKSAddr(), echo.Addr())
	defer staying.Close()
	for _, c := range []net.Conn{finishing, staying} {
		if err := roundTrip(c, "before close"); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		closed <- env.tun.Close(ctx, engine.WithDrainTimeout(500*time.Millisecond))
	}()
	waitTunnelState(t, env.e, env.tun.ID(), messages.StateDraining)
	if c, err := net.Dial("tcp", env.tun.SOCKSAddr()); err == nil {
		c.Close()
		t.Error("a new proxy connection was accepted while draining")
	}
	if err := roundTrip(finishing, "during the drain"); err != nil {
		t.Fatalf("active connection during the drain: %v", err)
	}
	finishing.Close()
	if err, n, _ := readUntilEnd(staying, 10*time.Second); err != io.EOF || n != 0 {
		t.Errorf("connection open at the end of the drain: read %d bytes, then %v; want EOF", n, err)
	}
	staying.Close()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	d := engineDelta(t, env.e, base, 2, 2)
	wantEnds(t, "engine client", d.Client, 2, ec{rNormal: 1, messages.EndDrainTimeout: 1}, ec{rNormal: 1, messages.EndDrainTimeout: 1})
	wantEnds(t, "exit", d.Exit, 2, ec{rNormal: 2}, ec{rNormal: 2})
}

// twoEngines starts an exit engine and a separate client engine on the exit's NATS server, each
// logging into a capture, and opens a tunnel from the client. The client engine is closed at
// cleanup only if closeClient is set.
func twoEngines(t *testing.T, spec engine.TunnelSpec, closeClient bool) (exitEng, clientEng *engine.Engine, tun *engine.Tunnel, exitLog, clientLog *logCapture) {
	t.Helper()
	exitLog, clientLog = newLogCapture(), newLogCapture()
	exitEng = startExitEngine(t, "far", func(c *engine.Config) {
		c.Logger = exitLog.logger()
		listenTCP(c)
		c.Exit.DrainTimeout = engine.Duration(300 * time.Millisecond) // an exit that shuts down with a flow open drains this long first
	})
	cfg := engine.Config{Logger: clientLog.logger(), NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}}
	trustTestBus(&cfg) // startEngine does this; the engine.New path below needs it too
	if closeClient {
		clientEng = startEngine(t, cfg)
	} else { // the test closes it, expecting an error; this cleanup only covers a test that stopped early
		var err error
		if clientEng, err = engine.New(cfg); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := clientEng.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = clientEng.Close(ctx)
		})
	}
	spec.Exit, spec.SOCKS, spec.UDPBind = "far", "127.0.0.1:0", "127.0.0.1"
	tun = openTunnelSpec(t, clientEng, spec)
	return exitEng, clientEng, tun, exitLog, clientLog
}

// TestConnReasonTunnelClosed: a connection whose tunnel goes away under it ends with
// tunnel_closed: closed with no drain (Tunnel.Close with WithDrainTimeout(0)), or its session taken
// away by the exit (the exit engine shuts down: the flow outlasts its drain, and its own side ends
// with engine_shutdown, read from its log since its stats are gone with it).
func TestConnReasonTunnelClosed(t *testing.T) {
	src := startServer(t, streamHandler)
	t.Run("close without drain", func(t *testing.T) {
		env := newConnEnv(t, "nodrain", nil, idleLimits(time.Minute, 200*time.Millisecond))
		base := settled(t, env.e)
		c := mustSocks(t, env.tun.SOCKSAddr(), src.Addr())
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
			t.Fatalf("transfer before close: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := env.tun.Close(ctx, engine.WithDrainTimeout(0)); err != nil {
			t.Fatal(err)
		}
		if err, _, _ := readUntilEnd(c, 10*time.Second); isTimeoutErr(err) {
			t.Errorf("proxy client still open after Tunnel.Close: %v", err)
		}
		if _, err := env.tun.Stats(ctx); !errors.Is(err, engine.ErrTunnelClosed) {
			t.Errorf("Tunnel.Stats after Close: %v, want ErrTunnelClosed", err)
		}
		d := engineDelta(t, env.e, base, 1, 1)
		wantEnds(t, "engine client", d.Client, 1, ec{rTunnel: 1}, ec{rTunnel: 1})
		t.Logf("exit side: %s", fmtStats(d.Exit))
	})
	t.Run("exit went away", func(t *testing.T) {
		exitEng, clientEng, tun, exitLog, _ := twoEngines(t, engine.TunnelSpec{}, true)
		base := settled(t, clientEng)
		c := mustSocks(t, tun.SOCKSAddr(), src.Addr())
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
			t.Fatalf("transfer before the exit closed: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exitEng.Close(ctx); err != nil {
			t.Fatalf("exit engine Close: %v", err)
		}
		if err := exitEng.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := exitEng.Stats(ctx); !errors.Is(err, engine.ErrEngineClosed) {
			t.Errorf("Stats after Close: %v, want ErrEngineClosed", err)
		}
		recs := exitLog.waitEnded(t, "exit log", 1, role("exit"))
		if len(recs) != 1 || recs[0].str("incoming") != string(rShutdown) || recs[0].str("outgoing") != string(rShutdown) {
			t.Errorf("exit log lines %v, want one with incoming=outgoing=%s", recs, rShutdown)
		}
		readErr, _, _ := readUntilEnd(c, 10*time.Second)
		if !errors.Is(readErr, syscall.ECONNRESET) {
			t.Errorf("proxy client after the exit closed: %v, want ECONNRESET", readErr)
		}
		d := engineDelta(t, clientEng, base, 1, 0)
		wantEnds(t, "client", d.Client, 1, ec{rTunnel: 1}, ec{rTunnel: 1})
	})
}

// TestConnReasonEngineShutdown: a client engine's Close drains its tunnels; a connection still open
// when the drain runs out ends with engine_shutdown, gracefully. If Close's context ends first,
// everything is stopped at once: engine_shutdown too, and the proxy client is reset. The closed
// engine's stats are gone (ErrEngineClosed), so its reasons are read from its log.
func TestConnReasonEngineShutdown(t *testing.T) {
	echo, src := startServer(t, echoHandler), startServer(t, streamHandler)
	t.Run("drained", func(t *testing.T) {
		spec := engine.TunnelSpec{DrainTimeout: engine.Duration(300 * time.Millisecond)}
		spec.Connections.CloseGrace = engine.Duration(200 * time.Millisecond)
		exitEng, clientEng, tun, _, clientLog := twoEngines(t, spec, true)
		exitBase := settled(t, exitEng)
		c := mustSocks(t, tun.SOCKSAddr(), echo.Addr())
		defer c.Close()
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			closed <- clientEng.Close(ctx)
		}()
		if err, n, _ := readUntilEnd(c, 10*time.Second); err != io.EOF || n != 0 {
			t.Errorf("proxy client at the end of the drain: read %d bytes, then %v; want EOF", n, err)
		}
		c.Close()
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		recs := clientLog.waitEnded(t, "client log", 1, role("client"))
		if len(recs) != 1 || recs[0].str("incoming") != string(rShutdown) || recs[0].str("outgoing") != string(rShutdown) {
			t.Errorf("client log lines %v, want one with incoming=outgoing=%s", recs, rShutdown)
		}
		d := engineDelta(t, exitEng, exitBase, 0, 1)
		t.Logf("exit side: %s", fmtStats(d.Exit))
	})
	t.Run("forced", func(t *testing.T) {
		exitEng, clientEng, tun, _, clientLog := twoEngines(t, engine.TunnelSpec{DrainTimeout: engine.Duration(time.Minute)}, false)
		exitBase := settled(t, exitEng)
		c := mustSocks(t, tun.SOCKSAddr(), src.Addr())
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
			t.Fatalf("transfer before close: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := clientEng.Close(ctx)
		cancel()
		if err == nil {
			t.Error("Close returned nil although the drain (1 min) outlasted its context (500 ms)")
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err2 := clientEng.Close(ctx); (err2 == nil) != (err == nil) {
			t.Errorf("second Close: %v; first: %v", err2, err)
		}
		if _, err := clientEng.Stats(ctx); !errors.Is(err, engine.ErrEngineClosed) {
			t.Errorf("Stats after Close: %v, want ErrEngineClosed", err)
		}
		readErr, _, _ := readUntilEnd(c, 10*time.Second)
		if !errors.Is(readErr, syscall.ECONNRESET) {
			t.Errorf("proxy client after the engine closed: %v, want ECONNRESET", readErr)
		}
		recs := clientLog.waitEnded(t, "client log", 1, role("client"))
		if len(recs) != 1 || recs[0].str("incoming") != string(rShutdown) || recs[0].str("outgoing") != string(rShutdown) {
			t.Errorf("client log lines %v, want one with incoming=outgoing=%s", recs, rShutdown)
		}
		// The client's goodbye should release the session on the exit at once, ending its side of
		// the connection (TestEngineCloseReleasesExitSessions allows 2 s after a graceful close).
		var d messages.ConnectionStats
		ok := testutil.Until(3*time.Second, func(ctx context.Context) bool {
			st, err := exitEng.Stats(ctx)
			d = subStats(st.Exit, exitBase.Exit)
			return err == nil && d.Ended >= 1 && d.Active == 0
		})
		t.Logf("exit side: %s", fmtStats(d))
		if !ok {
			t.Fatal("regression: after a forced Engine.Close the exit keeps the session and its connection: the " +
				"engine actor's children (tunnels and signaling) are stopped together, so the goodbye a tunnel " +
				"sends from its Stopping reaches a signaling actor that has already stopped")
		}
		if d.Ended != 1 {
			t.Errorf("exit ended %d connections, want 1", d.Ended)
		}
	})
}

// TestConnExitStatsCountProbes: the exit's connection stats count forwarded connections, not the
// tunnels' liveness probes (one connect-protocol ping when a tunnel opens, then a UDP echo per
// health interval while the data plane is quiet). The tunnel reaches its exit through a relay,
// which counts the probes' echoes.
func TestConnExitStatsCountProbes(t *testing.T) {
	logs := newLogCapture()
	relay, listen := NewRelay(t), testutil.FreeUDPAddr(t)
	env := newConnEnv(t, "probes", func(c *engine.Config) {
		c.Logger = logs.logger()
		c.Exit.Listen, c.Exit.Endpoint = listen.String(), relay.Addr().String()
		relay.SetTarget(listen)
	}, func(s *engine.TunnelSpec) {
		s.Health = engine.HealthConfig{Interval: engine.Duration(100 * time.Millisecond)}
	})
	isPing := func(r logRecord) bool { return r.str("target") == "ping" }
	// Ten quiet health intervals: ten probes, each of which had to be answered.
	base := relay.FromTarget.Load()
	waitFor(t, pollFor, "ten probe echoes from the exit", func() bool { return relay.FromTarget.Load()-base >= 10 })
	info, err := env.tun.Info(context.Background())
	if err != nil || info.State != messages.StateUp || info.Reconnects != 0 {
		t.Fatalf("a quiet tunnel did not stay up on its probes: %+v, %v", info, err)
	}
	st := settled(t, env.e)
	t.Logf("%d pings logged, %d datagrams from the exit; exit stats %s", len(logs.ended(isPing)), relay.FromTarget.Load()-base, fmtStats(st.Exit))
	if st.Exit.Opened != 0 {
		t.Errorf("exit opened %d connections, want 0", st.Exit.Opened)
	}
	wantEnds(t, "exit", st.Exit, 0, ec{}, ec{})
}
