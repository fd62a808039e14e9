package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// slowServer serves GET /slow?seed=S&n=N&ms=D: the payload of seed S and N bytes, paced over D
// milliseconds (a slow download, e.g. a video segment). started receives one value per request once
// its headers are out.
func slowServer(t testing.TB) (*httptest.Server, chan struct{}) {
	started := make(chan struct{}, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		const steps = 10
		src := testutil.Payload(seed, n)
		tick := time.NewTicker(time.Duration(ms) * time.Millisecond / steps)
		defer tick.Stop()
		for i := range steps {
			if _, err := io.CopyN(w, src, n/steps+map[bool]int64{true: n % steps}[i == steps-1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if i < steps-1 {
				select {
				case <-tick.C:
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, started
}

// awaitStarted waits for the slow server to have sent a response's headers.
func awaitStarted(t testing.TB, started <-chan struct{}) {
	t.Helper()
	testutil.Await(t, started, 20*time.Second, "the download to start")
}

func slowDownload(c *http.Client, base string, seed uint64, n int64, ms int) error {
	resp, err := c.Get(fmt.Sprintf("%s/slow?seed=%d&n=%d&ms=%d", base, seed, n, ms))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return testutil.CheckPayload(resp.Body, seed, n)
}

// TestCloseDrains: downloads shorter than the drain timeout finish intact while new connections are
// refused at once; one longer than the drain timeout ends with drain_timeout on both sides.
func TestCloseDrains(t *testing.T) {
	srv, started := slowServer(t)
	e := startExitEngine(t, "drain", nil)
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "drain", DrainTimeout: engine.Duration(3 * time.Second)})
	client := socksClient(t, tun)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- slowDownload(client, srv.URL, uint64(i+1), 1<<20, 600) }()
	}
	for range 3 {
		awaitStarted(t, started)
	}
	closed := make(chan error, 1)
	go func() { closed <- tun.Close(context.Background()) }()
	waitFor(t, 5*time.Second, "the tunnel to drain", func() bool {
		info, err := tun.Info(context.Background())
		return err != nil || info.State == messages.StateDraining
	})
	// New connections are refused at once: the listener is closed.
	if c, err := net.DialTimeout("tcp", tun.SOCKSAddr(), time.Second); err == nil {
		c.Close()
		t.Fatal("a new proxy connection was accepted while draining")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("new connection while draining: %v, want connection refused", err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("download during drain: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}

	// A download longer than the drain timeout is ended with drain_timeout.
	tun2 := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "drain", DrainTimeout: engine.Duration(300 * time.Millisecond)})
	go func() { errs <- slowDownload(socksClient(t, tun2), srv.URL, 9, 1<<20, 10_000) }()
	awaitStarted(t, started)
	start := time.Now()
	if err := tun2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err == nil {
		t.Fatal("a download longer than the drain timeout completed")
	}
	t.Logf("close with a long download returned after %v (drain 300ms, grace 1s)", time.Since(start))
	st, err := e.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
		if n := st.Client.ByEnd[side][messages.EndDrainTimeout]; n != 1 {
			t.Errorf("client %s drain_timeout = %d, want 1 (%v)", side, n, st.Client.ByEnd)
		}
	}
	if n := st.Client.ByEnd[messages.SideIncoming][messages.EndNormal]; n != 3 {
		t.Errorf("client incoming normal = %d, want 3", n)
	}
}

// TestCloseReturnsPromptly: no connections, well under 50 ms; one that finishes after 300 ms,
// right after it.
func TestCloseReturnsPromptly(t *testing.T) {
	srv, started := slowServer(t)
	e := startExitEngine(t, "prompt", nil)
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "prompt"})
	start := time.Now()
	if err := tun.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	idle := time.Since(start)
	// Generous bound (the goal is well under 50 ms): only to show no timer or poll is involved.
	if idle > raceSlowdown*50*time.Millisecond {
		t.Errorf("close without connections took %v", idle)
	}

	tun = openTunnelSpec(t, e, engine.TunnelSpec{Exit: "prompt"})
	var finished atomic.Int64
	done := make(chan error, 1)
	go func() {
		err := slowDownload(socksClient(t, tun), srv.URL, 5, 64<<10, 300)
		finished.Store(time.Now().UnixNano())
		done <- err
	}()
	awaitStarted(t, started)
	start = time.Now()
	if err := tun.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("download: %v", err)
	}
	after := returned.Sub(time.Unix(0, finished.Load()))
	t.Logf("close without connections: %v; with one 300 ms download: %v, returned %v after it ended", idle, returned.Sub(start), after)
	if returned.Sub(start) > 2*time.Second {
		t.Errorf("close took %v with one 300 ms download (drain timeout 5 s: it must not wait for it)", returned.Sub(start))
	}
}

// TestGoodbyes: the exit releases a closing client's peer and flows at once; clients of an exit that
// shuts down leave Up at once. Neither waits for a handshake or keepalive timeout.
func TestGoodbyes(t *testing.T) {
	srv, started := slowServer(t)
	// No drain: this test is about goodbyes (a draining exit's idle clients get 2 s to move away
	// first: exit_drain_test.go).
	exitEng := startExitEngine(t, "bye", func(c *engine.Config) { listenTCP(c); c.Exit.DrainTimeout = -1 })
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "bye"})
	go func() { _ = slowDownload(socksClient(t, tun), srv.URL, 1, 1<<20, 10_000) }()
	awaitStarted(t, started)
	waitFor(t, 5*time.Second, "the exit's flow", func() bool {
		st, _ := exitEng.Stats(context.Background())
		return st.Exit.Active == 1
	})
	start := time.Now()
	if err := tun.Close(context.Background(), engine.WithDrainTimeout(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the exit to release the flow", func() bool {
		st, _ := exitEng.Stats(context.Background())
		return st.Exit.Active == 0
	})
	released := time.Since(start)
	// Generous bound (the goal is 100 ms): a keepalive or handshake timeout would take seconds.
	if released > raceSlowdown*time.Second {
		t.Errorf("exit released the flow %v after the client's close", released)
	}

	// The exit shuts down: the client's tunnel leaves Up at once.
	tun = openTunnelSpec(t, client, engine.TunnelSpec{Exit: "bye"})
	start = time.Now()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- exitEng.Close(closeCtx) }()
	defer func() {
		if err := <-closed; err != nil {
			t.Errorf("exit engine Close: %v", err)
		}
	}()
	// This exit also hosts the NATS server the client uses, which goes away right after the
	// goodbye: nats.go may report the disconnect (Degraded) before it hands over the goodbye, on
	// another goroutine. Either way the goodbye must move the tunnel to Reconnecting at once.
	var left time.Duration
	for left == 0 {
		select {
		case ev := <-client.Events():
			if ev.Kind != engine.EventTunnelState || ev.Tunnel != tun.ID() ||
				(ev.From != messages.StateUp && ev.From != messages.StateDegraded) {
				continue // its opening, before the exit began to shut down
			}
			switch {
			case ev.To == messages.StateReconnecting:
				left = time.Since(start)
				// With one exit configured the tunnel reconnects (to the same exit, with backoff).
				if !strings.Contains(ev.Cause, "exit ended the session") {
					t.Fatalf("reconnecting for %q, want the exit's goodbye", ev.Cause)
				}
			case ev.To != messages.StateDegraded:
				t.Fatalf("left %s for %s (%s)", ev.From, ev.To, ev.Cause)
			}
		case <-closeCtx.Done():
			t.Fatal("the client's tunnel did not leave Up after its exit shut down")
		}
	}
	t.Logf("exit released a closing client's flow after %v; a client left Up %v after its exit began shutting down", released, left)
	if left > raceSlowdown*time.Second {
		t.Errorf("client left Up %v after the exit shut down", left)
	}
}

// TestSwitchUnderLoad: a new connection every 20 ms for 3 s, each downloading a checksummed body,
// while the tunnel switches exits: none fails, and in-flight downloads finish intact.
func TestSwitchUnderLoad(t *testing.T) {
	srv, _ := slowServer(t)
	a := startExitEngine(t, "exit-a", listenTCP)
	b := startExitEngine(t, "exit-b", func(c *engine.Config) { c.NATS.URLs = []string{a.NATSURL()} })
	tun := openTunnelSpec(t, a, engine.TunnelSpec{Exit: "exit-a"})
	client := socksClient(t, tun)
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(3 * time.Second)
	switched := make(chan error, 1)
	n := 0
	for time.Now().Before(end) {
		<-tick.C
		n++
		if n == 50 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				switched <- tun.Switch(ctx, "exit-b")
			}()
		}
		wg.Add(1)
		seed := uint64(n)
		go func() {
			defer wg.Done()
			if err := slowDownload(client, srv.URL, seed, 128<<10, 200); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err := <-switched; err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d downloads failed across the switch; first: %v", f, n, firstErr.Load())
	}
	info, err := tun.Info(context.Background())
	if err != nil || info.ExitID != "exit-b" || info.State != messages.StateUp {
		t.Fatalf("after switch: %+v, %v", info, err)
	}
	// Exits count a connection when its actor has stopped: wait for the last ones.
	var sa, sb engine.Stats
	waitFor(t, 10*time.Second, "both exits to have counted every download", func() bool {
		sa, _ = a.Stats(context.Background())
		sb, _ = b.Stats(context.Background())
		return sa.Exit.Ended+sb.Exit.Ended >= uint64(n)
	})
	t.Logf("%d downloads: %d through exit-a, %d through exit-b, none failed", n, sa.Exit.Ended, sb.Exit.Ended)
	if sa.Exit.Ended == 0 || sb.Exit.Ended == 0 {
		t.Fatalf("exit-a forwarded %d and exit-b %d of %d downloads", sa.Exit.Ended, sb.Exit.Ended, n)
	}
	// A switch to an exit that does not exist leaves the tunnel Up on exit-b.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tun.Switch(ctx, "exit-nowhere"); !errors.Is(err, engine.ErrExitUnreachable) {
		t.Fatalf("switch to a missing exit: %v", err)
	}
	if err := slowDownload(client, srv.URL, 77, 64<<10, 10); err != nil {
		t.Fatalf("after a failed switch: %v", err)
	}
}
