package test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// testLogger logs to stderr when WARREN_TEST_LOG=debug, else discards.
func testLogger() *slog.Logger {
	if os.Getenv("WARREN_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startExitEngine starts an engine with an embedded NATS server and an exit that may reach loopback.
func startExitEngine(t testing.TB, exitID string, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	cfg := engine.Config{
		Logger: testLogger(),
		Exit:   &engine.ExitConfig{ID: exitID, Listen: "127.0.0.1:0", Egress: engine.EgressConfig{AllowLoopback: true}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return startEngine(t, cfg)
}

func startEngine(t testing.TB, cfg engine.Config) *engine.Engine {
	t.Helper()
	trustTestBus(&cfg)
	return startSecureEngine(t, cfg)
}

// startSecureEngine starts an engine with the config as given (no test-bus trust defaults); it is
// closed, and checked for actor panics, at the test's end.
func startSecureEngine(t testing.TB, cfg engine.Config) *engine.Engine {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatalf("engine.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("engine.Close: %v", err)
		}
		failOnPanics(t, e)
	})
	return e
}

// trustTestBus: tests that are not about trust run their NATS servers on 127.0.0.1 with nobody
// else on the bus, so engines there trust any exit and exits admit any client — said explicitly,
// as the config requires on a shared bus. Tests about trust (security_test.go) build their
// engines with startSecureEngine, which leaves the config alone.
func trustTestBus(cfg *engine.Config) {
	if len(cfg.Trust.Operators) > 0 || cfg.Trust.AnyExit {
		return
	}
	cfg.Trust.AnyExit = true
	if cfg.Exit != nil && len(cfg.Exit.AllowedClients) == 0 {
		cfg.Exit.Open = true
	}
}

// failOnPanics fails the test if any actor of e panicked (each is stopped by its supervisor, logged
// at error with its stack and counted), or a parent reacted to a child it lost (supervision): no
// test in this package expects either (engine/supervision_test.go provokes them on purpose).
func failOnPanics(t testing.TB, e *engine.Engine) {
	t.Helper()
	if n := e.ActorPanics(); n != 0 {
		t.Errorf("%d actor panic(s) in engine %s: run with WARREN_TEST_LOG=debug for the stacks", n, e.ClientID()[:8])
	}
	if n := e.ChildrenLost(); n != 0 {
		t.Errorf("%d child actor(s) lost in engine %s (child_lost events): run with WARREN_TEST_LOG=debug", n, e.ClientID()[:8])
	}
}

// openTunnel opens a tunnel from e to exitID with both proxies on random loopback ports.
func openTunnel(t testing.TB, e *engine.Engine, exitID string) *engine.Tunnel {
	t.Helper()
	return openTunnelSpec(t, e, engine.TunnelSpec{Exit: exitID})
}

// openTunnelSpec opens a tunnel as spec says, within 20 s; with neither proxy given, both go on
// random loopback ports, and the tunnel's UDP binds to 127.0.0.1.
func openTunnelSpec(t testing.TB, e *engine.Engine, spec engine.TunnelSpec) *engine.Tunnel {
	t.Helper()
	if spec.SOCKS == "" && spec.HTTP == "" {
		spec.SOCKS, spec.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	}
	spec.UDPBind = "127.0.0.1"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tun, err := e.OpenTunnel(ctx, spec)
	if err != nil {
		t.Fatalf("OpenTunnel: %v", err)
	}
	return tun
}

// startEngineNoCleanup starts an exit engine "leak" that the test closes itself.
func startEngineNoCleanup(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{Logger: testLogger(),
		Exit: &engine.ExitConfig{ID: "leak", Listen: "127.0.0.1:0", Egress: engine.EgressConfig{AllowLoopback: true}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}
