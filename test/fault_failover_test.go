package test

// Failover between two exits, each killed or closed in turn on the same tunnel.

import (
	"context"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// twoExits serves exits alt-a and alt-b, each restartable as itself, and a client tunnel on alt-a
// with alt-b as its failover exit.
type twoExits struct {
	ids   [2]string
	start func(i int) *engine.Engine
	eng   [2]*engine.Engine
	tun   *engine.Tunnel
	ev    *tunnelEvents
}

func newTwoExits(t *testing.T, prefix string) *twoExits {
	ns := startNATS(t, nil)
	x := &twoExits{ids: [2]string{prefix + "-a", prefix + "-b"}}
	_, a := newIdentitySeed(t)
	_, b := newIdentitySeed(t)
	idents := [2]string{a, b}
	x.start = func(i int) *engine.Engine {
		return startExitEngine(t, x.ids[i], func(c *engine.Config) {
			c.NATS.URLs = []string{ns.URL()}
			c.Identity = idents[i]
			// Goodbye failover: an exit that shuts down says goodbye at once (no drain, in which
			// its clients would move away instead: exit_drain_test.go).
			c.Exit.DrainTimeout = -1
		})
	}
	x.eng = [2]*engine.Engine{x.start(0), x.start(1)}
	client := startEngine(t, natsClient(ns))
	x.ev = watchTunnel(client)
	x.tun = openTunnelSpec(t, client, engine.TunnelSpec{Exit: x.ids[0], Exits: []string{x.ids[1]}, Health: fastHealth()})
	x.ev.id = x.tun.ID()
	return x
}

// TestFailoverAlternatesOnKill: with two exits configured, the tunnel's exit dies without a word:
// it fails over to the other in under 5 s (detection included). The dead exit is restarted, then
// the other one dies, and so on: A, B, A killed on the same tunnel.
func TestFailoverAlternatesOnKill(t *testing.T) {
	srv, _ := slowServer(t)
	x := newTwoExits(t, "fo")
	on := 0
	for round := 1; round <= faultRounds; round++ {
		victim, other := on, 1-on
		killed := time.Now()
		x.eng[victim].Kill()
		down := x.ev.await(t, 10*time.Second, messages.StateReconnecting, gone...)
		up := x.ev.await(t, 10*time.Second, messages.StateUp, gone...)
		detected, failedOver := since(killed, down), since(killed, up)
		t.Logf("round %d: %s killed → reconnecting %v (%s); killed → up on the other %v (%s)",
			round, x.ids[victim], ms(detected), down.Cause, ms(failedOver), up.Cause)
		if detected > 5*time.Second || failedOver > 5*time.Second {
			t.Errorf("round %d: dead exit detected after %v, failed over after %v, want both within 5 s", round, detected, failedOver)
		}
		healed(t, x.tun, x.ev, x.ids[other], round)
		if err := slowDownload(socksClient(t, x.tun), srv.URL, uint64(40+round), 128<<10, 10); err != nil {
			t.Fatalf("round %d: download after failover to %s: %v", round, x.ids[other], err)
		}
		if round < faultRounds {
			x.eng[victim] = x.start(victim) // the same exit, as itself: the next failover goes back to it
		}
		on = other
	}
}

// TestExitGoodbyeFailoverAlternates: with two exits configured, the tunnel's exit shuts down and
// says goodbye: the tunnel fails over to the other in under 1 s. The exit is restarted, then the
// other one shuts down, and so on, three times on the same tunnel.
func TestExitGoodbyeFailoverAlternates(t *testing.T) {
	srv, _ := slowServer(t)
	x := newTwoExits(t, "bye")
	on := 0
	for round := 1; round <= faultRounds; round++ {
		victim, other := on, 1-on
		// No flow left on the victim (the last round's download may still be ending there): an exit
		// that closes with a flow open drains first, and the tunnel would move by a switch instead.
		noFlows(t, x.eng[victim])
		closed := make(chan error, 1)
		said := time.Now()
		go func(e *engine.Engine) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			closed <- e.Close(ctx)
		}(x.eng[victim])
		down := x.ev.await(t, 5*time.Second, messages.StateReconnecting, gone...)
		up := x.ev.await(t, 5*time.Second, messages.StateUp, gone...)
		graceful := since(said, up)
		t.Logf("round %d: %s closed → reconnecting %v (%s); closed → up on the other %v (%s)",
			round, x.ids[victim], ms(since(said, down)), down.Cause, ms(graceful), up.Cause)
		if graceful > time.Second {
			t.Errorf("round %d: failover after goodbye took %v, want under 1 s", round, graceful)
		}
		healed(t, x.tun, x.ev, x.ids[other], round)
		if err := slowDownload(socksClient(t, x.tun), srv.URL, uint64(50+round), 128<<10, 10); err != nil {
			t.Fatalf("round %d: download after failover to %s: %v", round, x.ids[other], err)
		}
		if err := testutil.Await(t, closed, 30*time.Second, "exit "+x.ids[victim]+" Close to return"); err != nil {
			t.Fatalf("round %d: exit %s Close: %v", round, x.ids[victim], err)
		}
		if round < faultRounds {
			x.eng[victim] = x.start(victim)
		}
		on = other
	}
}
