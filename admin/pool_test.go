package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/pool"
)

// openPool opens a pool of size slots over 4 ports on eng (its own exit, on a private bus); it is
// closed at the test's end, before the engine.
func openPool(t *testing.T, eng *engine.Engine, size int, mutate func(*pool.Config)) *pool.Pool {
	t.Helper()
	cfg := pool.Config{Size: size, SOCKSPorts: testutil.FreePortRange(t, 4)}
	cfg.Tunnel.UDPBind = "127.0.0.1"
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := pool.Open(bounded(t), eng, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx, -1); err != nil {
			t.Errorf("pool Close: %v", err)
		}
	})
	return p
}

// TestPoolAPI: GET /v1/pool, PATCH /v1/pool {"size"}, POST /v1/pool/rotate (all, or some slots),
// their errors, the pool in /v1/status, /readyz and the metrics.
func TestPoolAPI(t *testing.T) {
	eng := startEngine(t, "x", nil)
	p := openPool(t, eng, 2, nil)
	e := serve(t, eng, admin.Config{}, admin.Options{Pool: func() *pool.Pool { return p }})

	pv, err := e.c.Pool(bounded(t))
	if err != nil || pv.Size != 2 || len(pv.Slots) != 2 || pv.States.ByState["up"] != 2 || pv.SOCKSPorts != p.SOCKSPorts().String() {
		t.Fatalf("pool: %+v, %v", pv, err)
	}
	for i, s := range pv.Slots {
		if s.Index != i || s.State != "up" || s.Exit != "x" || s.SOCKS != p.SOCKSPorts().AddrOf(i) || s.Tunnel == "" || s.TunnelState != "up" {
			t.Fatalf("slot %d: %+v", i, s)
		}
	}
	// A connection through slot 1's port is listed with its slot, under its tunnel's name too.
	echo := testutil.EchoServer(t)
	conn := openSocks(t, pv.Slots[1].SOCKS, echo.Addr())
	cs := testutil.Poll(t, 10*time.Second, "the slot's connection", func(ctx context.Context) ([]admin.Connection, error) {
		return e.c.Connections(ctx, "")
	}, func(cs []admin.Connection) bool { return len(cs) == 1 })
	if cs[0].Slot == nil || *cs[0].Slot != 1 || cs[0].Tunnel != pv.Slots[1].Tunnel || cs[0].Target != echo.Addr() {
		t.Fatalf("slot connection: %+v", cs[0])
	}
	if one, err := e.c.Connections(bounded(t), pv.Slots[1].Tunnel); err != nil || len(one) != 1 || one[0].ID != cs[0].ID {
		t.Fatalf("connections of the slot's tunnel: %+v, %v", one, err)
	}
	conn.Close()
	testutil.Poll(t, 10*time.Second, "the slot's connection to end", func(ctx context.Context) ([]admin.Connection, error) {
		return e.c.Connections(ctx, "")
	}, func(cs []admin.Connection) bool { return len(cs) == 0 })

	st, err := e.c.Status(bounded(t))
	if err != nil || st.Pool == nil || st.Pool.Name != "pool" || st.Pool.Slots.Total != 2 || st.Role != "exit+client" {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if h, err := e.c.Readyz(bounded(t)); err != nil || !h.OK {
		t.Fatalf("readyz with every slot up: %+v, %v", h, err)
	}

	pv, err = e.c.ResizePool(bounded(t), 3)
	if err != nil || pv.Size != 3 || pv.States.ByState["up"] != 3 {
		t.Fatalf("resize to 3: %+v, %v", pv, err)
	}
	m := e.scrape()
	if got := m.must(t, "warren_pool_slots", "state", "up"); got != 3 {
		t.Errorf("warren_pool_slots{up}: %v", got)
	}
	if got := m.must(t, "warren_tunnels", "state", "up"); got != 3 {
		t.Errorf("warren_tunnels{up} (the slots' tunnels): %v", got)
	}

	moves := pv.Slots[0].Moves
	res, err := e.c.RotatePool(bounded(t))
	if err != nil || res.Moved != 3 || res.Failed != 0 {
		t.Fatalf("rotate all: %+v, %v", res, err)
	}
	res, err = e.c.RotatePool(bounded(t), 0)
	if err != nil || res.Moved != 1 || res.Failed != 0 || len(res.Errors) != 0 {
		t.Fatalf("rotate slot 0: %+v, %v", res, err)
	}
	pv, err = e.c.Pool(bounded(t))
	if err != nil || pv.Slots[0].Moves != moves+2 || pv.Slots[1].Moves != moves+1 {
		t.Fatalf("moves after two rotations of slot 0 and one of slot 1: %+v, %v", pv.Slots, err)
	}

	for body, field := range map[string]string{
		`{"size": 5}`: "body.size", `{"size": -1}`: "body.size", `{"size": "3"}`: "body.size", `{}`: "body.size",
		`{"size": 2, "slots": [1]}`: "body.slots",
	} {
		wantError(t, e.do("PATCH", "/v1/pool", body), http.StatusBadRequest, admin.CodeBadRequest, field)
	}
	for body, field := range map[string]string{
		`{"slots": [3]}`: "body.slots[0]", `{"slots": [0, -1]}`: "body.slots[1]", `{"slots": [1, 1]}`: "body.slots[1]",
		`{"slots": "all"}`: "body.slots", `{"size": 3}`: "body.size",
	} {
		wantError(t, e.do("POST", "/v1/pool/rotate", body), http.StatusBadRequest, admin.CodeBadRequest, field)
	}

	pv, err = e.c.ResizePool(bounded(t), 1)
	if err != nil || pv.Size != 1 || len(pv.Slots) != 1 {
		t.Fatalf("resize to 1: %+v, %v", pv, err)
	}

	// A closed pool: 503.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx, -1); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Pool(bounded(t))
	wantAPIError(t, err, admin.CodeUnavailable)
}

// TestNoPool: without a pool, /v1/pool answers 404 and readyz does not mention one.
func TestNoPool(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{Pool: func() *pool.Pool { return nil }})
	wantError(t, e.do("GET", "/v1/pool", ""), http.StatusNotFound, admin.CodeNotFound, "no pool")
	wantError(t, e.do("PATCH", "/v1/pool", `{"size": 1}`), http.StatusNotFound, admin.CodeNotFound)
	wantError(t, e.do("POST", "/v1/pool/rotate", ""), http.StatusNotFound, admin.CodeNotFound)
	if h, err := e.c.Readyz(bounded(t)); err != nil || !h.OK {
		t.Fatalf("readyz: %+v, %v", h, err)
	}
	if st, err := e.c.Status(bounded(t)); err != nil || st.Pool != nil {
		t.Fatalf("status: %+v, %v", st, err)
	}
}

// TestPoolReadyFraction: /readyz wants ready_fraction of the slots up. With one exit and at most
// one slot per exit, one of two slots is up and the other waits.
func TestPoolReadyFraction(t *testing.T) {
	eng := startEngine(t, "x", func(c *engine.Config) { c.Exit.DrainTimeout = engine.Duration(200 * time.Millisecond) })
	p := openPool(t, eng, 2, func(c *pool.Config) { c.MaxPerExit = 1 })
	half := serve(t, eng, admin.Config{ReadyFraction: 0.5}, admin.Options{Pool: func() *pool.Pool { return p }})
	all := serve(t, eng, admin.Config{}, admin.Options{Pool: func() *pool.Pool { return p }})
	if h, err := half.c.Readyz(bounded(t)); err != nil || !h.OK {
		t.Fatalf("readyz at 0.5 with 1 of 2 slots up: %+v, %v", h, err)
	}
	h, err := all.c.Readyz(bounded(t))
	if err != nil || h.OK || len(h.Problems) != 1 || !strings.Contains(h.Problems[0], "pool pool: 1 of 2 slots up, 2 needed") {
		t.Fatalf("readyz at 1 with 1 of 2 slots up: %+v, %v", h, err)
	}
	r := all.do("GET", "/readyz", "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz status %d", r.status)
	}
	// Drain the exit: the slot loses it and waits for another (there is none).
	if _, err := all.c.DrainExit(bounded(t)); err != nil {
		t.Fatal(err)
	}
	h, err = half.c.Readyz(bounded(t))
	if err != nil || h.OK || !strings.Contains(strings.Join(h.Problems, "\n"), "exit x") {
		t.Fatalf("readyz after the drain: %+v, %v", h, err)
	}
}
