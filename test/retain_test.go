package test

// Nothing retained (issue 12): one tunnel switched between two exits and reconnected, many times
// over, leaves the process with exactly the goroutines, file descriptors and netstacks it started
// with, and the Go heap in use (after GC) within 1 MiB of the start. BenchmarkSwitchReconnectChurn
// (retain_bench_test.go) reports the same as bytes retained per cycle.
//
// A Switch cycle is Tunnel.Switch to the other exit. A Reconnect cycle is the exit the tunnel is on
// shutting down: it says goodbye to the session, so the tunnel reconnects at once to the next exit
// of its failover list (the other one); the exit that left is then started again (a new engine with
// the same exit id), ready to be the next cycle's failover exit. Every cycle proves the new leg with
// a checksum-verified 1 KiB download through the tunnel's SOCKS5 proxy.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
)

// retainSlack is how far above its starting level the heap in use may end (issue 12).
const retainSlack = 1 << 20

// retainSettle bounds the wait for the process to come back to its starting level: longer than the
// exits' netstack TIME_WAIT (5 s, netstack.tcpTimeWait), which holds the endpoints of the last
// cycles' connections until it expires.
const retainSettle = 30 * time.Second

// retainWorld is a standalone NATS server, two exit engines on it (restartable) and a client
// engine with one tunnel whose failover list is both exits.
type retainWorld struct {
	t          testing.TB
	ns         *natsServer
	ids        [2]string
	exits      [2]*engine.Engine
	drained    [2]chan struct{} // closed when exits[i]'s Events are closed (its engine closed)
	client     *engine.Engine
	tun        *engine.Tunnel
	cur        int // the exit the tunnel is on
	reconnects int // the tunnel's reconnections so far
	http       *http.Client
	srv        string
	seed       uint64
}

func newRetainWorld(t testing.TB) *retainWorld {
	t.Helper()
	srv := newPayloadServer()
	t.Cleanup(srv.Close)
	// The NATS server keeps a log of closed connections for its monitoring (10000 by default):
	// each exit restart would add one. Bounded, and not Warren's, so it is kept to one here.
	ns := startNATS(t, func(o *server.Options) { o.MaxClosedClients = 1 })
	w := &retainWorld{t: t, ns: ns, ids: [2]string{"retain-a", "retain-b"}, srv: srv.URL}
	t.Cleanup(func() { // after the client engine's cleanup (registered later, run earlier)
		for i := range w.exits {
			if w.exits[i] != nil {
				w.stopExit(i)
			}
		}
	})
	w.startExit(0)
	w.startExit(1)
	cfg := natsClient(ns)
	w.client = startEngine(t, cfg)
	drainEvents(w.client) // as an application would: unread, the engine keeps up to 1024 events
	w.tun = openTunnelSpec(t, w.client, engine.TunnelSpec{Exit: w.ids[0], Exits: []string{w.ids[1]}, SOCKS: "127.0.0.1:0",
		DrainTimeout: engine.Duration(200 * time.Millisecond)})
	w.http = socksClient(t, w.tun)
	w.prove("open")
	return w
}

// drainEvents reads e's events until they close; the returned channel is closed then.
func drainEvents(e *engine.Engine) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range e.Events() {
		}
	}()
	return done
}

// startExit starts exit i. Not with startExitEngine: a test cleanup per engine would keep every
// closed engine reachable until the test ends.
func (w *retainWorld) startExit(i int) {
	w.t.Helper()
	cfg := engine.Config{Logger: testLogger(), NATS: engine.NATSConfig{URLs: []string{w.ns.URL()}},
		Exit: &engine.ExitConfig{ID: w.ids[i], Listen: "127.0.0.1:0", Egress: engine.EgressConfig{AllowLoopback: true},
			RequestsPerSecond: 10000, RequestBurst: 10000,
			DrainTimeout: -1}} // a closed exit says goodbye at once: its tunnel reconnects (a drain would move it)
	trustTestBus(&cfg)
	e, err := engine.New(cfg)
	if err != nil {
		w.t.Fatalf("engine.New %s: %v", w.ids[i], err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		w.t.Fatalf("engine.Start %s: %v", w.ids[i], err)
	}
	w.exits[i], w.drained[i] = e, drainEvents(e)
}

// stopExit closes exit i's engine (it says goodbye to its sessions) and waits for its events to end.
func (w *retainWorld) stopExit(i int) {
	w.t.Helper()
	e := w.exits[i]
	w.exits[i] = nil
	noFlows(w.t, e) // the last proof's flow has ended: its connection records no engine_shutdown
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		w.t.Errorf("engine.Close %s: %v", w.ids[i], err)
	}
	failOnPanics(w.t, e)
	testutil.Await(w.t, w.drained[i], 10*time.Second, w.ids[i]+"'s events to close")
}

// prove downloads 1 KiB through the tunnel and checks it.
func (w *retainWorld) prove(when string) {
	w.t.Helper()
	w.seed++
	if err := download(w.http, w.srv, w.seed, 1<<10); err != nil {
		w.t.Fatalf("%s: download: %v", when, err)
	}
}

// wantOn waits for the tunnel to be Up on the current exit after w.reconnects reconnections.
func (w *retainWorld) wantOn(when string) {
	w.t.Helper()
	testutil.Poll(w.t, 20*time.Second*raceSlowdown, when+": the tunnel Up on "+w.ids[w.cur], w.tun.Info, func(i engine.TunnelInfo) bool {
		return i.State == messages.StateUp && i.ExitID == w.ids[w.cur] && i.Reconnects == w.reconnects
	})
}

// switchCycle switches the tunnel to the other exit and proves the new leg.
func (w *retainWorld) switchCycle(n int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.cur = 1 - w.cur
	if err := w.tun.Switch(ctx, w.ids[w.cur]); err != nil {
		w.t.Fatalf("switch %d: %v", n, err)
	}
	when := fmt.Sprintf("switch %d", n)
	w.wantOn(when)
	w.prove(when)
}

// reconnectCycle shuts down the exit the tunnel is on, waits for the tunnel to reconnect to the
// other one, proves it, and starts the exit that left again.
func (w *retainWorld) reconnectCycle(n int) {
	w.t.Helper()
	left := w.cur
	w.stopExit(left)
	w.cur, w.reconnects = 1-left, w.reconnects+1
	when := fmt.Sprintf("reconnect %d", n)
	w.wantOn(when)
	w.prove(when)
	w.startExit(left)
}

// warmUp runs a cycle of each kind from each exit (numbered -1, -2), so that pools, lazily started
// goroutines and restarted exits are part of the baseline.
func (w *retainWorld) warmUp() {
	w.t.Helper()
	for i := range 2 {
		w.switchCycle(-1 - i)
	}
	for i := range 2 {
		w.reconnectCycle(-1 - i)
	}
}

// quiet waits, up to limit, for the process to be still — three looks 200 ms apart (each after
// GC) with the same goroutines, descriptors and live netstacks, and live heaps within 64 KiB — and
// returns the last look. What a cycle leaves to finish on its own (a closed engine's dead-letter
// throttle goroutine, an old leg's release) must not be counted as the starting level.
func quiet(tb testing.TB, limit time.Duration) (procStats, int64) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var prev procStats
	var prevStacks int64
	same := 0
	for {
		now, stacks := sample(tb), netstack.LiveStacks()
		if now.goroutines == prev.goroutines && now.fds == prev.fds && stacks == prevStacks &&
			max(now.live, prev.live)-min(now.live, prev.live) < 64<<10 {
			if same++; same == 2 {
				return now, stacks
			}
		} else {
			same = 0
		}
		prev, prevStacks = now, stacks
		if time.Now().After(deadline) {
			tb.Fatalf("the process did not come to rest within %v: last %+v, %d live netstacks", limit, now, stacks)
		}
		<-tick.C
	}
}

// settle waits, up to limit, for goroutines, descriptors and live netstacks to be exactly at
// base's and the heap in use after GC within slack above it; it returns the last look and whether
// it got there. The heap is looked at every 200 ms only: each look is two GCs.
func settle(tb testing.TB, base procStats, baseStacks int64, slack uint64, limit time.Duration) (procStats, bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if runtime.NumGoroutine() == base.goroutines && fdCount(tb) == base.fds && netstack.LiveStacks() == baseStacks {
			now := sample(tb)
			if now.goroutines == base.goroutines && now.fds == base.fds && now.heap <= base.heap+slack {
				return now, true
			}
		}
		if time.Now().After(deadline) {
			return sample(tb), false
		}
		<-tick.C
	}
}

// TestSwitchReconnectRetainNothing: after a warm-up, 100 Switch cycles and 100 Reconnect cycles on
// one tunnel, each proven by a download; then the goroutines, file descriptors and netstacks are
// exactly those of the start, and the heap in use after GC is within 1 MiB of it.
func TestSwitchReconnectRetainNothing(t *testing.T) {
	w := newRetainWorld(t)
	w.warmUp()
	base, baseStacks := quiet(t, retainSettle)
	baseFDs, baseG := fdTargets(), goroutineStacks()
	writeHeapProfile(t, "retain-base")
	writeGoroutines(t, "retain-base-goroutines")
	const cycles = 100
	start := time.Now()
	for i := range cycles {
		w.switchCycle(i)
	}
	switched := time.Now()
	for i := range cycles {
		w.reconnectCycle(i)
	}
	t.Logf("%d switch cycles in %v, %d reconnect cycles in %v", cycles, switched.Sub(start).Round(time.Millisecond),
		cycles, time.Since(switched).Round(time.Millisecond))
	end, ok := settle(t, base, baseStacks, retainSlack, retainSettle)
	writeHeapProfile(t, "retain-end")
	writeGoroutines(t, "retain-end-goroutines")
	t.Logf("start: heap in use %d KiB (live %d KiB), %d goroutines, %d fds; end: %d KiB (live %d KiB), %d goroutines, %d fds",
		base.heap>>10, base.live>>10, base.goroutines, base.fds, end.heap>>10, end.live>>10, end.goroutines, end.fds)
	if ok {
		return
	}
	if end.goroutines != base.goroutines {
		endG := goroutineStacks()
		t.Errorf("%d goroutines after the cycles, %d before; goroutines not there at the start:\n%s\ngone since:\n%s",
			end.goroutines, base.goroutines, newStacks(baseG, endG), newStacks(endG, baseG))
	}
	if end.fds != base.fds {
		t.Errorf("%d descriptors after the cycles, %d before; new: %v", end.fds, base.fds, newFDs(baseFDs, fdTargets()))
	}
	if n := netstack.LiveStacks(); n != baseStacks {
		t.Errorf("%d live netstacks after the cycles, %d before", n, baseStacks)
	}
	if end.heap > base.heap+retainSlack {
		t.Errorf("heap in use %d KiB after the cycles and GC, %d KiB before (live %d KiB, %d KiB): %d KiB more over %d cycles "+
			"(WARREN_HEAP_PROFILE_DIR=dir keeps retain-base.pprof and retain-end.pprof for go tool pprof "+
			"-sample_index=inuse_space -diff_base; run with -memprofilerate 1 for exact figures)",
			end.heap>>10, base.heap>>10, end.live>>10, base.live>>10, (end.heap-base.heap)>>10, 2*cycles)
	}
}

// fdTargets is what each open descriptor refers to (socket:[inode], a path...).
func fdTargets() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// newFDs is what is in now and not in before.
func newFDs(before, now []string) []string {
	var out []string
	for _, l := range now {
		if i := slices.Index(before, l); i >= 0 {
			before = slices.Delete(slices.Clone(before), i, i+1)
			continue
		}
		out = append(out, l)
	}
	return out
}

// goroutineStacks is the goroutine profile, grouped by stack (one group a paragraph).
func goroutineStacks() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// newStacks is the groups of now whose stacks are not in before (or with more goroutines).
func newStacks(before, now string) string {
	var out strings.Builder
	for _, g := range strings.Split(now, "\n\n") {
		if !strings.Contains(before, g) {
			out.WriteString(g + "\n\n")
		}
	}
	return out.String()
}
