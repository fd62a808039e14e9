package test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// groupSize tunnels share one exit in TestIdleTunnelsShareTheirExitsHealth; with checks every
// second, the hub probes one of them per second while all idle (each at least every 60 s).
const groupSize = 8

// TestIdleTunnelsShareTheirExitsHealth: the tunnels of one exit are judged together (the health
// hub, docs/health.md). While they idle, the exit sees about one probe a second for all of them,
// not one per tunnel. A cut of one idle tunnel's path alone is found when its turn comes (here
// within 8 s: one of eight a second), and only that tunnel reconnects; a cut of the path of a
// tunnel in use is found within 5 s, and so is a cut of the whole path, for every tunnel: as when
// each probed on its own.
func TestIdleTunnelsShareTheirExitsHealth(t *testing.T) {
	ns := startNATS(t, nil)
	_, relay := relayedExit(t, "shared", ns.URL())
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tuns := map[string]*engine.Tunnel{}
	for range groupSize {
		tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "shared", Health: fastHealth(), HandshakeTimeout: engine.Duration(2 * time.Second)})
		tuns[tun.ID()] = tun
	}
	dropReceived(ev) // the opens

	// Idle: replies from the exit over 4 s. One probe per tunnel per second would be 32 echoes.
	before := relay.FromTarget.Load()
	window := 4 * time.Second
	ev.quiet(t, window, messages.StateReconnecting, messages.StateDegraded)
	idle := relay.FromTarget.Load() - before
	t.Logf("datagrams from the exit to %d idle tunnels in %v: %d", groupSize, window, idle)
	if idle > 12 {
		t.Errorf("%d datagrams from the exit to %d idle tunnels in %v; want about one probe a second for all (≤ 12)", idle, groupSize, window)
	}

	// One tunnel's path alone.
	if _, ok := relay.BlackholeClient(); !ok {
		t.Fatal("the relay has seen no client")
	}
	cut := time.Now()
	down := ev.await(t, 20*time.Second, messages.StateReconnecting, messages.StateDegraded)
	victim := down.Tunnel
	t.Logf("one path cut: %s reconnecting after %v (%s)", victim, ms(since(cut, down)), down.Cause)
	if d := since(cut, down); d > 13*time.Second {
		t.Errorf("one idle tunnel's cut found after %v; want within its turn (8 s) and 5 s", d)
	}
	reconnects := map[string]int{victim: 1}
	healedAlone(t, ev, tuns, victim, reconnects)

	// One tunnel's path alone, while every tunnel is used: the one that sends and hears nothing is
	// probed at once.
	if _, ok := relay.BlackholeClient(); !ok {
		t.Fatal("the relay has seen no new client")
	}
	srv, _ := slowServer(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	cut = time.Now()
	for _, tun := range tuns {
		c := socksClient(t, tun)
		c.Timeout = 10 * time.Second
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := slowDownload(c, srv.URL, 3, 1024, 1); err != nil {
				failed.Add(1)
			}
		}()
	}
	down = ev.await(t, 10*time.Second, messages.StateReconnecting, messages.StateDegraded)
	wg.Wait()
	if n := failed.Load(); n > 1 {
		t.Errorf("%d downloads failed; only the cut tunnel's may", n)
	}
	t.Logf("one path cut, tunnels in use: %s reconnecting after %v (%s)", down.Tunnel, ms(since(cut, down)), down.Cause)
	if d := since(cut, down); d > 5*time.Second {
		t.Errorf("the cut of a tunnel in use found after %v, want within 5 s", d)
	}
	reconnects[down.Tunnel]++
	healedAlone(t, ev, tuns, down.Tunnel, reconnects)

	// The whole path: every tunnel within 5 s.
	relay.Blackhole()
	cut = time.Now()
	seen := map[string]time.Duration{}
	for len(seen) < groupSize {
		e := ev.await(t, 10*time.Second, messages.StateReconnecting, gone...)
		if _, dup := seen[e.Tunnel]; !dup {
			seen[e.Tunnel] = since(cut, e)
		}
	}
	for id, d := range seen {
		if d > 5*time.Second {
			t.Errorf("tunnel %s: the whole path's cut found after %v, want within 5 s", id, d)
		}
	}
	t.Logf("whole path cut: found for all %d tunnels within %v", groupSize, ms(maxOf(seen)))
	relay.Restore()
	testutil.Eventually(t, 20*time.Second, "every tunnel up again", func() bool {
		for _, tun := range tuns {
			if info, err := tun.Info(context.Background()); err != nil || info.State != messages.StateUp {
				return false
			}
		}
		return true
	})
}

// healedAlone: the victim is up again, and no other tunnel moved; each has its expected reconnects.
func healedAlone(t *testing.T, ev *tunnelEvents, tuns map[string]*engine.Tunnel, victim string, reconnects map[string]int) {
	t.Helper()
	ev.id = victim
	ev.await(t, 10*time.Second, messages.StateUp, gone...)
	ev.id = ""
	ev.quiet(t, 2*time.Second, messages.StateReconnecting) // no other tunnel was touched
	for id, tun := range tuns {
		info, err := tun.Info(context.Background())
		if err != nil || info.State != messages.StateUp || info.Reconnects != reconnects[id] {
			t.Errorf("tunnel %s: %+v, %v; want up with %d reconnects", id, info, err, reconnects[id])
		}
	}
}

// dropReceived drops the transitions received so far.
func dropReceived(te *tunnelEvents) {
	for {
		select {
		case <-te.ch:
		default:
			return
		}
	}
}

func maxOf(m map[string]time.Duration) time.Duration {
	var d time.Duration
	for _, v := range m {
		d = max(d, v)
	}
	return d
}
