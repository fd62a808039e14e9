package test

// Many short connections through one tunnel: every one is counted, and nothing is left behind.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnManyShortConnections runs 10,000 SOCKS5 connections, 50 at a time, each one small
// request/response with an echo destination. Afterwards the process's goroutines and file
// descriptors are back to where they were (+5), and the tunnel and the exit have counted exactly
// 10,000 ended connections, all normal.
func TestConnManyShortConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	const total, workers = 10000, 50
	echo := startServer(t, echoHandler)
	env := newConnEnv(t, "many", nil, nil)
	base := settled(t, env.e)
	startG, err := goroutines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	startFD, err := openFDs()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total || failed.Load() > 100 {
					return
				}
				if err := shortConn(env.tun.SOCKSAddr(), echo.Addr(), i); err != nil {
					failed.Add(1)
					select {
					case errs <- fmt.Errorf("connection %d: %w", i, err):
					default:
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d connections failed", n, total)
	}
	t.Logf("%d connections in %v", total, time.Since(start).Round(time.Millisecond))

	all := ec{rNormal: total}
	wantEnds(t, "client", env.tunnelStats(t, total), total, all, all)
	d := engineDelta(t, env.e, base, total, total)
	wantEnds(t, "engine client", d.Client, total, all, all)
	wantEnds(t, "exit", d.Exit, total, all, all)
	g := poll(t, fmt.Sprintf("goroutines back to %d+5", startG), goroutines, func(n int) bool { return n <= startG+5 })
	f := poll(t, fmt.Sprintf("open fds back to %d+5", startFD), fds, func(n int) bool { return n <= startFD+5 })
	t.Logf("goroutines %d → %d, open fds %d → %d", startG, g, startFD, f)
}

// shortConn makes one SOCKS5 connection, sends a 32-byte message, reads the echo and closes.
func shortConn(proxyAddr, target string, i int64) error {
	c, code, err := socksConnect(proxyAddr, target)
	if err != nil {
		return err
	}
	defer c.Close()
	if code != socksSucceeded {
		return fmt.Errorf("socks5 reply %#x", code)
	}
	return roundTrip(c, fmt.Sprintf("message %024d", i))
}
