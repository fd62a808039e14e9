package engine

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// startTestEngine starts an engine and closes it at the test's end.
func startTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	return e
}

// nextEvent waits for the first event of kind on e (other events are skipped).
func nextEvent(t *testing.T, e *Engine, within time.Duration, match func(Event) bool) Event {
	t.Helper()
	return testutil.AwaitMatch(t, e.Events(), within, "a matching event", match)
}

func tunnelChildren(t *testing.T, tun *Tunnel) *actors.TunnelChildren {
	t.Helper()
	res, err := tun.e.system.Root.RequestFuture(tun.pid, &actors.GetTunnelChildren{}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res.(*actors.TunnelChildren)
}

// TestKeepaliveLostIsReplaced: the tunnel's health monitor stops without the tunnel asking (as a
// supervisor stops a panicking actor). The tunnel notices at once, spawns a fresh keepalive that
// watches the current leg, and says so with an event; the new keepalive then detects the exit's
// death, which the tunnel would otherwise never notice. Done three times on the same tunnel.
func TestKeepaliveLostIsReplaced(t *testing.T) {
	exitCfg := func() Config {
		return Config{Exit: &ExitConfig{ID: "ka-exit", Listen: "127.0.0.1:0", Egress: EgressConfig{AllowLoopback: true}, Open: true},
			// a listener, so that the client engine can join its embedded NATS server
			NATS: NATSConfig{EmbeddedListen: "127.0.0.1:0"}}
	}
	x := startTestEngine(t, exitCfg())
	client := startTestEngine(t, Config{NATS: NATSConfig{URLs: []string{x.NATSURL()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tun, err := client.OpenTunnel(ctx, TunnelSpec{Exit: "ka-exit", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
		Pins: map[string]string{"ka-exit": x.ClientID()}})
	if err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		old := tunnelChildren(t, tun).Keepalive
		client.system.Root.Stop(old)
		ev := nextEvent(t, client, 5*time.Second, func(ev Event) bool { return ev.Kind == EventChildLost })
		if ev.Tunnel != tun.ID() || ev.Actor != "tunnel "+tun.ID()+"/keepalive" {
			t.Fatalf("round %d: child lost event %+v", round, ev)
		}
		now := tunnelChildren(t, tun).Keepalive
		if now == nil || now.Equal(old) {
			t.Fatalf("round %d: keepalive not replaced: %v → %v", round, old, now)
		}
		if info, err := tun.Info(ctx); err != nil || info.State != messages.StateUp {
			t.Fatalf("round %d: tunnel %+v, %v", round, info, err)
		}
	}
	// The replacement watches the leg: an exit that dies without a word is detected.
	x.Kill()
	killed := time.Now()
	ev := nextEvent(t, client, 10*time.Second, func(ev Event) bool {
		return ev.Kind == EventTunnelState && ev.To == messages.StateReconnecting
	})
	if d := time.Since(killed); d > 5*time.Second {
		t.Fatalf("dead exit detected after %v (%s), want within 5 s", d, ev.Cause)
	}
	if n := client.ActorPanics(); n != 0 {
		t.Fatalf("%d actor panics", n)
	}
}

// TestHealthHubLostIsReplaced: the engine's health hub stops without the engine asking (as a
// supervisor stops a panicking actor). The engine spawns a fresh hub, says so with an event, and
// every tunnel registers its current leg with it: the new hub then detects the exit's death.
// Done three times.
func TestHealthHubLostIsReplaced(t *testing.T) {
	x := startTestEngine(t, Config{Exit: &ExitConfig{ID: "hub-exit", Listen: "127.0.0.1:0", Egress: EgressConfig{AllowLoopback: true}, Open: true},
		NATS: NATSConfig{EmbeddedListen: "127.0.0.1:0"}})
	client := startTestEngine(t, Config{NATS: NATSConfig{URLs: []string{x.NATSURL()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var tuns []*Tunnel
	for range 2 {
		tun, err := client.OpenTunnel(ctx, TunnelSpec{Exit: "hub-exit", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
			Pins: map[string]string{"hub-exit": x.ClientID()}})
		if err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	for round := 1; round <= 3; round++ {
		old := tunnelChildren(t, tuns[0]).Hub
		client.system.Root.Stop(old)
		ev := nextEvent(t, client, 5*time.Second, func(ev Event) bool { return ev.Kind == EventChildLost })
		if ev.Actor != "engine/health hub" || ev.Cause != "respawned" {
			t.Fatalf("round %d: child lost event %+v", round, ev)
		}
		for _, tun := range tuns {
			testutil.Eventually(t, 5*time.Second, "the tunnel to hear of the new hub", func() bool {
				now := tunnelChildren(t, tun).Hub
				return now != nil && !now.Equal(old)
			})
			if info, err := tun.Info(ctx); err != nil || info.State != messages.StateUp {
				t.Fatalf("round %d: tunnel %+v, %v", round, info, err)
			}
		}
	}
	// The new hub watches both tunnels' legs: an exit that dies without a word is detected.
	x.Kill()
	killed := time.Now()
	seen := map[string]bool{}
	testutil.AwaitMatch(t, client.Events(), 10*time.Second, "both tunnels reconnecting", func(ev Event) bool {
		if ev.Kind == EventTunnelState && ev.To == messages.StateReconnecting {
			seen[ev.Tunnel] = true
		}
		return len(seen) == len(tuns)
	})
	if d := time.Since(killed); d > 5*time.Second {
		t.Fatalf("dead exit detected after %v, want within 5 s", d)
	}
	if n := client.ActorPanics(); n != 0 {
		t.Fatalf("%d actor panics", n)
	}
}

// TestActorPanicsAreReported: a panic in any actor of the engine's system is counted and reported
// as an event with its reason.
func TestActorPanicsAreReported(t *testing.T) {
	e := startTestEngine(t, Config{})
	pid := e.system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if s, ok := c.Message().(string); ok {
			panic(s)
		}
	}))
	e.system.Root.Send(pid, "boom")
	ev := nextEvent(t, e, 5*time.Second, func(ev Event) bool { return ev.Kind == EventActorPanicked })
	if ev.Cause != "boom" || ev.Actor != pid.String() {
		t.Fatalf("event %+v", ev)
	}
	if n := e.ActorPanics(); n != 1 {
		t.Fatalf("ActorPanics = %d, want 1", n)
	}
}
