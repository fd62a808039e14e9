package test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
)

func fdCount(t testing.TB) int {
	n, err := openFDs()
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return n
}

// TestReconfigureKeepsProxyPort: the old device is released before the new one is created, the
// proxy keeps its port, and traffic flows on the new session.
func TestReconfigureKeepsProxyPort(t *testing.T) {
	srv, _ := slowServer(t)
	e := startExitEngine(t, "reconf", nil)
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "reconf"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before, _ := tun.Info(ctx)
	stacks := netstack.LiveStacks()
	if err := tun.Reconfigure(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := tun.Info(ctx)
	if err != nil || after.State != messages.StateUp {
		t.Fatalf("after reconfigure: %+v, %v", after, err)
	}
	if after.SessionID == before.SessionID || after.SOCKSAddr != before.SOCKSAddr || after.HTTPAddr != before.HTTPAddr {
		t.Fatalf("reconfigure: session %s → %s, socks %s → %s, http %s → %s", before.SessionID, after.SessionID,
			before.SOCKSAddr, after.SOCKSAddr, before.HTTPAddr, after.HTTPAddr)
	}
	if n := netstack.LiveStacks(); n != stacks {
		t.Fatalf("live stacks %d after reconfigure, %d before: a device leaked", n, stacks)
	}
	if err := slowDownload(socksClient(t, tun), srv.URL, 3, 256<<10, 10); err != nil {
		t.Fatalf("download after reconfigure: %v", err)
	}
}

// TestLifecycleChurn runs 200 close / reconfigure / switch cycles with traffic in flight and checks
// that goroutines, file descriptors and live devices return to their starting level.
func TestLifecycleChurn(t *testing.T) {
	srv, _ := slowServer(t)
	a := startExitEngine(t, "churn-a", listenTCP)
	b := startExitEngine(t, "churn-b", func(c *engine.Config) { c.NATS.URLs = []string{a.NATSURL()} })
	_ = b
	// Warm up once so lazily started goroutines (pools, timers) are part of the baseline.
	warm := openTunnelSpec(t, a, engine.TunnelSpec{Exit: "churn-a"})
	_ = slowDownload(socksClient(t, warm), srv.URL, 1, 16<<10, 10)
	_ = warm.Close(context.Background())
	srv.CloseClientConnections()
	baseG, baseFD, baseStacks := runtime.NumGoroutine(), fdCount(t), netstack.LiveStacks()

	tun := openTunnelSpec(t, a, engine.TunnelSpec{Exit: "churn-a", DrainTimeout: engine.Duration(200 * time.Millisecond)})
	exits := []string{"churn-a", "churn-b"}
	cur := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var failedSwitchTraffic int
	for i := range 200 {
		var wg sync.WaitGroup
		var trafficErr error
		client := socksClient(t, tun)
		wg.Add(1)
		go func() { defer wg.Done(); trafficErr = slowDownload(client, srv.URL, uint64(i), 32<<10, 20) }()
		switch i % 3 {
		case 0: // switch with a download in flight: it must survive
			cur = 1 - cur
			if err := tun.Switch(ctx, exits[cur]); err != nil {
				t.Fatalf("cycle %d: switch: %v", i, err)
			}
			wg.Wait()
			if trafficErr != nil {
				failedSwitchTraffic++
				t.Errorf("cycle %d: download across a switch: %v", i, trafficErr)
			}
		case 1: // reconfigure: connections on the old session may end; nothing may leak
			if err := tun.Reconfigure(ctx); err != nil {
				t.Fatalf("cycle %d: reconfigure: %v", i, err)
			}
			wg.Wait()
		case 2: // close a second tunnel with traffic in flight, drained
			other := openTunnelSpec(t, a, engine.TunnelSpec{Exit: exits[1-cur], DrainTimeout: engine.Duration(200 * time.Millisecond)})
			oc := socksClient(t, other)
			var oerr error
			wg.Add(1)
			go func() { defer wg.Done(); oerr = slowDownload(oc, srv.URL, uint64(i+1000), 32<<10, 20) }()
			if err := other.Close(ctx); err != nil {
				t.Fatalf("cycle %d: close: %v", i, err)
			}
			wg.Wait()
			_ = oerr // may have been refused if Close came first; must not hang
		}
	}
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	waitFor(t, 20*time.Second, "devices, goroutines and descriptors to return to their starting level", func() bool {
		return netstack.LiveStacks() == baseStacks && runtime.NumGoroutine() <= baseG && fdCount(t) <= baseFD
	})
	t.Logf("after 200 cycles: live stacks %d (start %d), goroutines %d (start %d), fds %d (start %d)",
		netstack.LiveStacks(), baseStacks, runtime.NumGoroutine(), baseG, fdCount(t), baseFD)
}
