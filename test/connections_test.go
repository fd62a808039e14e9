package test

// Tunnel.Connections and the byte counters: live while a connection runs, exact once it ended.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// TestConnectionsLiveBytes: a download through SOCKS5 that the test paces chunk by chunk. While it
// runs, Tunnel.Connections shows it (proxy, source, target, exit) with its byte counts growing to
// what the client has read, and the tunnel's and the engine's Stats.Bytes grow with it; once it
// ended, the connection is gone from the list and Stats.Bytes are exactly what moved.
func TestConnectionsLiveBytes(t *testing.T) {
	const (
		request = "hello"
		chunk   = 256 << 10
		chunks  = 4
		seed    = 42
	)
	more := make(chan struct{})
	srv := startServer(t, func(c *net.TCPConn, done <-chan struct{}) {
		if _, err := io.ReadFull(c, make([]byte, len(request))); err != nil {
			return
		}
		data := testutil.Payload(seed, chunk*chunks)
		for range chunks {
			select {
			case <-more:
			case <-done:
				return
			}
			if _, err := io.CopyN(c, data, chunk); err != nil {
				return
			}
		}
	})
	env := newConnEnv(t, "conns-x", nil, nil)
	if list, err := env.tun.Connections(bounded(t)); err != nil || len(list) != 0 {
		t.Fatalf("connections before any: %v, %v", list, err)
	}
	c := mustSocks(t, env.tun.SOCKSAddr(), srv.Addr())
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(c); got <- b }()

	var last engine.ConnInfo
	for i := 1; i <= chunks; i++ {
		select {
		case more <- struct{}{}:
		case <-time.After(within):
			t.Fatalf("the server did not take chunk %d", i)
		}
		want := int64(i * chunk)
		list := testutil.Poll(t, within, "the connection's bytes to grow", env.tun.Connections, func(l []engine.ConnInfo) bool {
			return len(l) == 1 && l[0].BytesOut == want
		})
		ci := list[0]
		if ci.Kind != "socks5" || ci.Source != c.LocalAddr().String() || ci.Target != srv.Addr() || ci.Exit != "conns-x" ||
			ci.BytesIn != int64(len(request)) || ci.Since.IsZero() || (i > 1 && (ci.ID != last.ID || !ci.Since.Equal(last.Since))) {
			t.Fatalf("chunk %d: connection %+v (client %s, target %s)", i, ci, c.LocalAddr(), srv.Addr())
		}
		last = ci
		st, err := env.tun.Stats(bounded(t))
		if err != nil || st.Active != 1 || st.Bytes.Out != want || st.Bytes.In != int64(len(request)) {
			t.Fatalf("chunk %d: tunnel stats %s (%v); want %d bytes out", i, fmtStats(st), err, want)
		}
		est, err := env.e.Stats(bounded(t))
		if err != nil || est.Client.Bytes.Out != want {
			t.Fatalf("chunk %d: engine client bytes out %d (%v); want %d", i, est.Client.Bytes.Out, err, want)
		}
	}
	close(more)
	b := testutil.Await(t, got, within, "the download's end")
	c.Close() // the client's side ends too: the connection is over
	if err := testutil.CheckPayload(bytes.NewReader(b), seed, chunk*chunks); err != nil {
		t.Fatalf("download: %v", err)
	}
	st := poll(t, "the connection to end", env.tun.Stats, func(s messages.ConnectionStats) bool { return s.Active == 0 && s.Ended == 1 })
	if st.Bytes.Out != chunk*chunks || st.Bytes.In != int64(len(request)) {
		t.Fatalf("tunnel bytes once ended: in %d out %d; want %d and %d", st.Bytes.In, st.Bytes.Out, len(request), chunk*chunks)
	}
	if list, err := env.tun.Connections(bounded(t)); err != nil || len(list) != 0 {
		t.Fatalf("connections once ended: %v, %v", list, err)
	}
	est := poll(t, "the exit's flow to end", env.e.Stats, func(s engine.Stats) bool { return s.Exit.Active == 0 && s.Exit.Ended == 1 })
	if est.Client.Bytes.Out != chunk*chunks || est.Client.Bytes.In != int64(len(request)) ||
		est.Exit.Bytes.Out != chunk*chunks || est.Exit.Bytes.In != int64(len(request)) {
		t.Fatalf("engine bytes once ended: client %+v exit %+v", est.Client.Bytes, est.Exit.Bytes)
	}
}

// TestPoolSlotConnections: a pool slot's connections are listed by SlotConnections; the pool's
// tunnels are not the engine's own (Tunnels leaves them out, and their names do not block an
// OpenTunnel of the same name), but their transitions are counted.
func TestPoolSlotConnections(t *testing.T) {
	echo := startServer(t, echoHandler)
	e := startExitEngine(t, "slotconns", nil)
	ctx := bounded(t)
	cfg := pool.Config{Name: "sc", Size: 2, SOCKSPorts: testutil.FreePortRange(t, 2)}
	cfg.Tunnel.UDPBind = "127.0.0.1"
	p, err := pool.Open(ctx, e, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background(), -1) })
	slots, err := p.Slots(ctx)
	if err != nil || len(slots) != 2 {
		t.Fatalf("Slots: %v, %v", slots, err)
	}
	c := mustSocks(t, slots[1].SOCKSAddr, echo.Addr())
	defer c.Close()
	wantNil(t, "round trip through slot 1", roundTrip(c, "slot one"))
	// A copy loop counts what it wrote once the write returns, which can be after the client has
	// read it: the count is polled.
	list := poll(t, "slot 1's connection to count its 8 bytes back", func(ctx context.Context) ([]engine.ConnInfo, error) {
		return p.SlotConnections(ctx, 1)
	}, func(l []engine.ConnInfo) bool { return len(l) != 1 || l[0].BytesOut == 8 })
	if len(list) != 1 || list[0].Target != echo.Addr() || list[0].Source != c.LocalAddr().String() ||
		list[0].BytesIn != 8 || list[0].BytesOut != 8 || list[0].Exit != "slotconns" {
		t.Fatalf("slot 1's connections: %+v", list)
	}
	if list, err := p.SlotConnections(ctx, 0); err != nil || len(list) != 0 {
		t.Fatalf("slot 0's connections: %+v, %v", list, err)
	}
	if _, err := p.SlotConnections(ctx, 7); !errors.Is(err, pool.ErrNoSlot) {
		t.Fatalf("slot 7: %v; want ErrNoSlot", err)
	}
	if own, err := e.Tunnels(ctx); err != nil || len(own) != 0 {
		t.Fatalf("the engine's own tunnels beside a pool: %d, %v", len(own), err)
	}
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Name: slots[0].Tunnel.ID, Exit: "slotconns"})
	if own, err := e.Tunnels(ctx); err != nil || len(own) != 1 || own[0].ID() != slots[0].Tunnel.ID {
		t.Fatalf("the engine's own tunnels: %v, %v", own, err)
	}
	wantNil(t, "Close", tun.Close(ctx))
	up := engine.TunnelTransition{From: stHs, To: stUp}
	if n := e.Counters().Transitions[up]; n != 3 { // two slots' tunnels and the engine's own
		t.Fatalf("handshaking → up counted %d times; want 3", n)
	}
}
