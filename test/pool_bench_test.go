package test

// BenchmarkPoolSlots (issue 13; docs/pool.md): a pool of N slots (default 1,000;
// WARREN_POOL_SLOTS overrides) over three exits in this process, on one NATS bus. It reports the
// time until every slot is up (pool.Open), the heap and RSS each slot adds, the time to prove every
// port with a 1 KiB download, and the time to rotate every slot (make-before-break, 64 at once).
//
//	go test ./test -run '^$' -bench 'PoolSlots' -benchtime 1x -timeout 30m

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

func BenchmarkPoolSlots(b *testing.B) {
	n := 1000
	if s := os.Getenv("WARREN_POOL_SLOTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("WARREN_POOL_SLOTS=%q", s)
		}
		n = v
	}
	for range b.N {
		srv := newPayloadServer()
		ns := startNATS(b, nil)
		for _, id := range []string{"bench-a", "bench-b", "bench-c"} {
			startExitEngine(b, id, func(c *engine.Config) {
				c.NATS.URLs = []string{ns.URL()}
				c.Exit.AnnounceInterval = engine.Duration(time.Second)
				c.Exit.MaxSessionsPerClient = 4 * n
				c.Exit.RequestsPerSecond, c.Exit.RequestBurst = 100000, 100000
			})
		}
		client := startEngine(b, natsClient(ns))
		base := sample(b)
		cfg := pool.Config{Size: n, SOCKSPorts: testutil.FreePortRange(b, n), MaxMoves: 64}
		cfg.Tunnel.UDPBind = "127.0.0.1"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		start := time.Now()
		p, err := pool.Open(ctx, client, cfg)
		if err != nil {
			b.Fatalf("pool.Open: %v", err)
		}
		bringUp := time.Since(start)
		slots, err := p.Slots(ctx)
		if err != nil {
			b.Fatal(err)
		}
		counts, others := perExit(slots)
		if others != 0 {
			b.Fatalf("%d of %d slots not up after Open: %v", others, n, counts)
		}
		start = time.Now()
		provePorts(b, slots, srv.URL)
		proved := time.Since(start)
		up := sample(b)
		start = time.Now()
		moved, failed, err := p.RotateAll(ctx, 64)
		rotated := time.Since(start)
		if err != nil || failed > 0 || moved != n {
			b.Errorf("RotateAll: moved %d, failed %d, %v", moved, failed, err)
		}
		b.ReportMetric(bringUp.Seconds(), "s-all-up")
		b.ReportMetric(proved.Seconds(), "s-prove-ports")
		b.ReportMetric(rotated.Seconds(), "s-rotate-all")
		b.ReportMetric(float64(up.heap-base.heap)/float64(n)/(1<<20), "MiB-heap/slot")
		b.ReportMetric(float64(up.rss-base.rss)/float64(n)/(1<<20), "MiB-rss/slot")
		b.ReportMetric(float64(up.goroutines-base.goroutines)/float64(n), "goroutines/slot")
		b.Logf("%d slots over 3 exits %v: all up in %v, ports proved in %v, all rotated in %v", n, counts, bringUp, proved, rotated)
		if err := p.Close(ctx, -1); err != nil {
			b.Error(err)
		}
		cancel()
		srv.Close()
	}
}

// provePorts downloads 1 KiB through every slot's SOCKS5 port, 64 at once.
func provePorts(b testing.TB, slots []pool.SlotInfo, srv string) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, len(slots))
	for _, s := range slots {
		if s.State != messages.SlotUp {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u, _ := url.Parse("socks5h://" + s.SOCKSAddr)
			c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: time.Minute}
			if err := download(c, srv, uint64(s.Index), 1<<10); err != nil {
				errs <- fmt.Errorf("slot %d: %w", s.Index, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
