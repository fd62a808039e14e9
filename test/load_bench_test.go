package test

// Under load (issue 12): one tunnel carrying 16 bulk streams at once stays under 256 MiB of RSS.
//
//	go test ./test -run '^$' -bench 'SixteenStreams' -benchtime 1x
//	WARREN_HEAP_PROFILE_DIR=/tmp/prof go test ./test -run '^$' -bench 'SixteenStreams' -benchtime 1x
//	go tool pprof -sample_index=inuse_space -top /tmp/prof/sixteen-peak.pprof   # the heap near its peak
//	go tool pprof -sample_index=alloc_space -top /tmp/prof/sixteen-end.pprof    # all the process allocated

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// peaks samples the process's resident set and Go heap in use every interval until stopped, and
// keeps the highest of each.
type peaks struct {
	stop    chan struct{}
	done    chan struct{}
	rss     uint64
	heap    uint64
	start   time.Time
	heapAt  time.Duration // when the heap peaked, since start
	samples int
	err     error
}

// heapMetrics are the runtime/metrics whose sum is HeapInuse: objects, and free space in their spans.
var heapMetrics = []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes"}

// samplePeaks starts sampling. With profile set, each time the heap has grown 10% over the peak
// last profiled, the heap profile is written there (as of the last GC: near the peak, since the
// heap grows only between GCs).
func samplePeaks(interval time.Duration, profile string) *peaks {
	p := &peaks{stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	var profiled uint64
	ms := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		ms[i].Name = name
	}
	look := func() {
		p.samples++
		if rss, err := readRSS(); err != nil {
			p.err = err
		} else {
			p.rss = max(p.rss, rss)
		}
		metrics.Read(ms)
		if h := ms[0].Value.Uint64() + ms[1].Value.Uint64(); h > p.heap {
			p.heap, p.heapAt = h, time.Since(p.start)
			if profile != "" && h > profiled+profiled/10 {
				profiled = h
				if err := writeHeapTo(profile); err != nil {
					p.err = err
				}
			}
		}
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			look()
			select {
			case <-p.stop:
				look()
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// writeHeapTo writes the heap profile to path; it does not fail the test, so it may run off the
// test's goroutine.
func writeHeapTo(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// end stops the sampling and returns the peaks.
func (p *peaks) end() *peaks {
	close(p.stop)
	<-p.done
	return p
}

// resetHWM resets the kernel's peak resident set of this process (VmHWM) to the current one, so
// that hwm reports the peak since; false where that is not possible.
func resetHWM() bool { return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil }

// hwm is the process's peak resident set (VmHWM in /proc/self/status), in bytes.
func hwm() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:")); ok {
			f := bytes.Fields(rest)
			if len(f) != 2 || string(f[1]) != "kB" {
				return 0, fmt.Errorf("VmHWM: %q", rest)
			}
			kb, err := strconv.ParseUint(string(f[0]), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// BenchmarkSixteenStreams: one tunnel (exit and client engines in this process, the client's own
// NATS connection to the exit's) carries 16 downloads of 32 MiB at once, through SOCKS5, from a
// payload server on 127.0.0.1; each stream's sha256 is checked. Reports the throughput of the 16
// together (MB/s), and over the transfer, sampled every 50 ms: the peak resident set of the whole
// process (MiB-peak-rss; MiB-hwm is the kernel's peak, reset before the transfer, where the kernel
// allows it) and the peak Go heap in use (MiB-peak-heap); and the resident set before the transfer
// (MiB-rss-before: two engines and a tunnel, idle). The goal is a peak RSS under 256 MiB.
func BenchmarkSixteenStreams(b *testing.B) {
	const streams, size = 16, 32 << 20
	w := newScaleWorld(b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tun, err := w.client.OpenTunnel(ctx, engine.TunnelSpec{Exit: "scale", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	client := socksClient(b, tun) // each request bounded by its 2-minute timeout
	if err := download(client, w.srv, 0, 1<<10); err != nil {
		b.Fatalf("first download: %v", err)
	}
	sums := make([]string, streams) // the expected, computed before the clock runs
	for i := range sums {
		sums[i] = testutil.PayloadSum(uint64(i+1), size)
	}
	before := sample(b)
	hwmOK := resetHWM()
	var atPeak string
	if dir := os.Getenv("WARREN_HEAP_PROFILE_DIR"); dir != "" {
		atPeak = filepath.Join(dir, "sixteen-peak.pprof")
	}
	peak := samplePeaks(50*time.Millisecond, atPeak)
	b.SetBytes(streams * size)
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fetchChecked(client, w.srv, uint64(i+1), size, sums[i]); err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Error(err)
		}
	}
	b.StopTimer()
	peak.end()
	if peak.err != nil {
		b.Fatal(peak.err)
	}
	b.ReportMetric(float64(peak.rss)/(1<<20), "MiB-peak-rss")
	b.ReportMetric(float64(peak.heap)/(1<<20), "MiB-peak-heap")
	b.ReportMetric(float64(before.rss)/(1<<20), "MiB-rss-before")
	if hwmOK {
		h, err := hwm()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(h)/(1<<20), "MiB-hwm")
	}
	b.Logf("%d samples over %v; the heap peaked after %v", peak.samples, time.Since(peak.start).Round(time.Millisecond),
		peak.heapAt.Round(time.Millisecond))
	writeHeapProfile(b, "sixteen-end")
}

// fetchChecked downloads Payload(seed, n) and checks its length and sha256 against sum.
func fetchChecked(c *http.Client, base string, seed uint64, n int64, sum string) error {
	return fetchPayload(c, base, seed, n, func(body io.Reader) error {
		got, m, err := testutil.Sum(body)
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", m, err)
		}
		if m != n || got != sum {
			return fmt.Errorf("got %d bytes sha256 %s, want %d bytes sha256 %s", m, got, n, sum)
		}
		return nil
	})
}
