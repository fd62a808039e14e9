package test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// TestPoolUpdate: a running pool takes a new filter (its slots move to the exits that pass it,
// make-before-break), a new size and a rotation age in place; a change to what is fixed for its
// life, or an invalid setting, is refused naming the field and changes nothing.
func TestPoolUpdate(t *testing.T) {
	ns := startNATS(t, nil)
	poolExit(t, ns, "upd-eu", map[string]string{"region": "eu"})
	poolExit(t, ns, "upd-us", map[string]string{"region": "us"})
	client := startEngine(t, natsClient(ns))
	cfg := pool.Config{Name: "upd", Size: 3, SOCKSPorts: testutil.FreePortRange(t, 6), Exits: pool.ExitFilter{Labels: map[string]string{"region": "eu"}}}
	cfg.Tunnel.UDPBind = "127.0.0.1"
	cfg.Tunnel.DrainTimeout = engine.Duration(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pool.Open(ctx, client, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	defer p.Close(context.Background(), -1)
	onExit := func(exit string, n int) func() bool {
		return func() bool {
			slots, err := p.Slots(ctx)
			if err != nil || len(slots) != n {
				return false
			}
			for _, s := range slots {
				if s.State != messages.SlotUp || s.Exit != exit {
					return false
				}
			}
			return true
		}
	}
	testutil.Eventually(t, 20*time.Second, "3 slots up on upd-eu", onExit("upd-eu", 3))

	// Refused: each names its field and changes nothing.
	for _, bad := range []struct {
		field  string
		fixed  bool
		mutate func(*pool.Config)
	}{
		{"pool.socks_ports", true, func(c *pool.Config) { c.SOCKSPorts = testutil.FreePortRange(t, 6) }},
		{"pool.tunnel", true, func(c *pool.Config) { c.Tunnel.DrainTimeout = engine.Duration(2 * time.Second) }},
		{"pool.name", true, func(c *pool.Config) { c.Name = "other" }},
		{"pool.strategy", false, func(c *pool.Config) { c.Strategy = "fastest" }},
		{"pool.socks_ports", false, func(c *pool.Config) { c.Size = 7 }}, // more slots than its 6 ports
	} {
		c := cfg
		c.Exits.Labels = map[string]string{"region": "us"} // would move every slot if applied
		bad.mutate(&c)
		changed, err := p.Update(ctx, c)
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != bad.field || errors.Is(err, pool.ErrFixed) != bad.fixed || changed != nil {
			t.Fatalf("Update changing %s: %v, %v; want a FieldError naming it (fixed %v)", bad.field, changed, err, bad.fixed)
		}
	}
	if !onExit("upd-eu", 3)() {
		t.Fatal("a refused update moved slots")
	}

	// The filter, the size and the rotation age change in place.
	next := cfg
	next.Size = 5
	next.Exits.Labels = map[string]string{"region": "us"}
	next.Rotate.MaxAge = engine.Duration(time.Hour)
	changed, err := p.Update(ctx, next)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if want := []string{"pool.exits", "pool.rotate", "pool.size"}; !equalStrings(changed, want) {
		t.Fatalf("Update changed %v, want %v", changed, want)
	}
	testutil.Eventually(t, 30*time.Second, "5 slots up on upd-us", onExit("upd-us", 5))
	slots, err := p.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.RotateAt.IsZero() || time.Until(s.RotateAt) < 50*time.Minute {
			t.Errorf("slot %d: next rotation %v, want about an hour away", s.Index, s.RotateAt)
		}
	}
	if changed, err := p.Update(ctx, next); err != nil || len(changed) != 0 {
		t.Errorf("the same config again: %v, %v; want no change", changed, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
