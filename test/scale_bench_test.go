package test

// Scale benchmarks (issue 12; docs/performance.md): what an idle tunnel costs, and what a closed
// one leaves behind. Run them one at a time, with one iteration:
//
//	go test ./test -run '^$' -bench 'IdleTunnels' -benchtime 1x -timeout 30m
//	go test ./test -run '^$' -bench 'TunnelChurn' -benchtime 1x
//
// Both measure the whole process (one engine serving as exit, the tunnels of another engine in
// the same process), from outside, through the engine API; per-tunnel figures divide the growth
// over the baseline (the engines started, no tunnel) by the number of tunnels. BenchmarkIdleTunnels
// also reports the cookie replies the exit sent during the bring-up (device.CookieRepliesSent):
// each is a tunnel whose handshake waits 5 s more.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// procStats is one look at the process.
type procStats struct {
	heap       uint64 // Go heap in use (HeapInuse) after a forced GC: live objects and their spans' free space
	live       uint64 // Go heap objects (HeapAlloc) after the same GC: what is reachable
	rss        uint64 // resident set, bytes
	goroutines int
	fds        int
}

func sample(tb testing.TB) procStats {
	tb.Helper()
	ms := memAfterGC()
	return procStats{heap: ms.HeapInuse, live: ms.HeapAlloc, rss: rssBytes(tb), goroutines: runtime.NumGoroutine(), fds: fdCount(tb)}
}

// rssBytes reads the resident set from /proc/self/statm.
func rssBytes(tb testing.TB) uint64 {
	n, err := readRSS()
	if errors.Is(err, fs.ErrNotExist) {
		tb.Skipf("no /proc/self/statm: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// readRSS reads the resident set from /proc/self/statm; it does not fail the test, so it may run
// off the test's goroutine.
func readRSS() (uint64, error) {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/self/statm: %q", data)
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * uint64(os.Getpagesize()), nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scaleWorld is one exit engine and one client engine in this process, on the exit's embedded NATS.
type scaleWorld struct {
	exit, client *engine.Engine
	srv          string // a payload server on 127.0.0.1
}

func newScaleWorld(b testing.TB, exitCfg func(*engine.Config)) *scaleWorld {
	srv := newPayloadServer()
	b.Cleanup(srv.Close)
	x := startExitEngine(b, "scale", func(c *engine.Config) {
		listenTCP(c)
		c.Exit.MaxSessionsPerClient = 4096
		c.Exit.RequestsPerSecond, c.Exit.RequestBurst = 10000, 10000
		if exitCfg != nil {
			exitCfg(c)
		}
	})
	client := startEngine(b, engine.Config{NATS: engine.NATSConfig{URLs: []string{x.NATSURL()}}})
	return &scaleWorld{exit: x, client: client, srv: srv.URL}
}

// openMany opens n tunnels, at most parallel at a time, and proves each with a 1 KiB download.
func (w *scaleWorld) openMany(b testing.TB, n, parallel int) []*engine.Tunnel {
	tuns := make([]*engine.Tunnel, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			tun, err := w.client.OpenTunnel(ctx, engine.TunnelSpec{Exit: "scale", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1"})
			if err == nil {
				tuns[i] = tun
				err = download(socksClient(b, tun), w.srv, uint64(i), 1<<10)
			}
			if err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return tuns
}

func closeAll(b testing.TB, tuns []*engine.Tunnel) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	for _, tun := range tuns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := tun.Close(ctx); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkIdleTunnels: N Up tunnels that each carried one 1 KiB request, then idle. Reports per
// tunnel: Go heap in use, RSS and goroutines over the baseline, and the process's CPU while they
// idle (percent of one core, measured over idleWindow after a settle), and the time to bring all N up, opened
// 400 at a time.
func BenchmarkIdleTunnels(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for range b.N {
				w := newScaleWorld(b, nil)
				base := sample(b)
				cookies0 := device.CookieRepliesSent()
				start := time.Now()
				tuns := w.openMany(b, n, 400)
				up := time.Since(start)
				cookies := device.CookieRepliesSent() - cookies0
				now := sample(b)
				// The bring-up's aftermath (GC of what the opens allocated, the first health checks)
				// settles before the idle window; both are spans of the measurement.
				const settle, idleWindow = 5 * time.Second, 10 * time.Second
				<-time.After(settle)
				// The memory the bring-up freed goes back to the OS now rather than through the
				// runtime's background scavenger during the window: that is a one-off of the
				// bring-up, not what idle tunnels cost.
				debug.FreeOSMemory()
				stopProfile := cpuProfile(b, fmt.Sprintf("idle-%d-cpu", n))
				cpu0, t0 := cpuTime(), time.Now()
				<-time.After(idleWindow) // the measurement's span, not a synchronisation
				stopProfile()
				idle := float64(cpuTime()-cpu0) / float64(time.Since(t0)) * 100
				per := func(a, z uint64) float64 { return (float64(a) - float64(z)) / float64(n) / (1 << 20) }
				b.ReportMetric(per(now.heap, base.heap), "heap-MiB/tunnel")
				b.ReportMetric(per(now.rss, base.rss), "rss-MiB/tunnel")
				b.ReportMetric(float64(now.goroutines-base.goroutines)/float64(n), "goroutines/tunnel")
				b.ReportMetric(idle, "idle-cpu-%")
				b.ReportMetric(up.Seconds(), "s-all-up")
				b.ReportMetric(float64(cookies), "cookies")
				writeHeapProfile(b, fmt.Sprintf("idle-%d", n))
				writeGoroutines(b, fmt.Sprintf("idle-%d-goroutines", n))
				closeAll(b, tuns)
			}
		})
	}
}

// BenchmarkTunnelChurn: cycles of opening 100 tunnels, one request through each, closing them.
// Reports the Go heap retained per cycle (after GC, over the state after a warm-up cycle) and the
// goroutines and file descriptors left after the last cycle.
func BenchmarkTunnelChurn(b *testing.B) {
	const perCycle, cycles = 100, 10
	// Both looks are taken once the process has rested this long (WARREN_CHURN_SETTLE, default 6 s:
	// longer than the exit's TIME_WAIT, 5 s, so that neither counts connections still waiting it out).
	rest := 6 * time.Second
	if d, err := time.ParseDuration(os.Getenv("WARREN_CHURN_SETTLE")); err == nil {
		rest = d
	}
	for range b.N {
		w := newScaleWorld(b, nil)
		for range cycles { // warm-up as long as the run: see TestTunnelChurnRetainsNothing
			closeAll(b, w.openMany(b, perCycle, 100))
		}
		base, _ := restingFor(b, rest, retainSettle+rest)
		writeHeapProfile(b, "churn-base")
		for range cycles {
			closeAll(b, w.openMany(b, perCycle, 100))
		}
		end, _ := restingFor(b, rest, retainSettle+rest)
		writeHeapProfile(b, "churn-end")
		writeGoroutines(b, "churn-goroutines")
		b.ReportMetric((float64(end.heap)-float64(base.heap))/cycles/1024, "retained-KiB/cycle")
		b.ReportMetric((float64(end.live)-float64(base.live))/cycles/1024, "live-KiB/cycle")
		b.ReportMetric(float64(end.goroutines-base.goroutines), "goroutines-left")
		b.ReportMetric(float64(end.fds-base.fds), "fds-left")
	}
}

// profileFile creates $WARREN_HEAP_PROFILE_DIR/<name> when that variable is set (nil otherwise):
// where the scale benchmarks write their profiles (docs/performance.md).
func profileFile(b testing.TB, name string) *os.File {
	dir := os.Getenv("WARREN_HEAP_PROFILE_DIR")
	if dir == "" {
		return nil
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// writeHeapProfile writes the heap profile as it is now to <name>.pprof (go tool pprof
// -sample_index=inuse_space).
func writeHeapProfile(b testing.TB, name string) {
	f := profileFile(b, name+".pprof")
	if f == nil {
		return
	}
	defer f.Close()
	for range 3 { // a heap profile is as of the GC cycles before the last: let them catch up
		runtime.GC()
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// cpuProfile starts a CPU profile to <name>.pprof; the returned function stops it.
func cpuProfile(b testing.TB, name string) func() {
	f := profileFile(b, name+".pprof")
	if f == nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// writeGoroutines writes the goroutines, grouped by stack, to <name>.txt.
func writeGoroutines(b testing.TB, name string) {
	if f := profileFile(b, name+".txt"); f != nil {
		defer f.Close()
		_ = pprof.Lookup("goroutine").WriteTo(f, 1)
	}
}
