package pool

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// TestWireGuardCoolOff: a WireGuard exit's cool-off doubles while it keeps failing, up to
// wgCoolOffMax; a tunnel that served for wgCoolOff, or a failure long after the last cool-off,
// starts again from wgCoolOff; a failure reported while it is down changes nothing.
func TestWireGuardCoolOff(t *testing.T) {
	p := &poolActor{down: map[string]*downExit{}, held: map[string]time.Time{}}
	now := time.Unix(1_000_000, 0)
	var got []time.Duration
	for range 7 {
		cool := p.markDown("wg:a", 0, now)
		got = append(got, cool)
		if !p.isDown("wg:a", now.Add(cool-time.Millisecond)) || p.isDown("wg:a", now.Add(cool)) {
			t.Fatalf("after a cool-off of %v: down %v just before its end, %v at it", cool,
				p.isDown("wg:a", now.Add(cool-time.Millisecond)), p.isDown("wg:a", now.Add(cool)))
		}
		if again := p.markDown("wg:a", 0, now.Add(time.Second)); again != 0 {
			t.Fatalf("a second failure during the cool-off: %v, want 0 (nothing changes)", again)
		}
		now = now.Add(cool)
		if !p.expireDown(now) || p.isDown("wg:a", now) {
			t.Fatalf("the cool-off of %v did not end at its end", cool)
		}
		now = now.Add(time.Second) // placed again, and failed at once
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	if len(got) != len(want) {
		t.Fatalf("cool-offs %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("cool-offs %v, want %v", got, want)
		}
	}
	if cool := p.markDown("wg:a", wgCoolOff, now); cool != wgCoolOff {
		t.Errorf("after serving %v: cool-off %v, want %v", wgCoolOff, cool, wgCoolOff)
	}
	now = now.Add(wgCoolOff)
	p.markDown("wg:a", 0, now) // 60 s
	now = now.Add(time.Minute)
	p.expireDown(now)
	if cool := p.markDown("wg:a", 0, now.Add(wgCoolOffMax+time.Second)); cool != wgCoolOff {
		t.Errorf("a failure more than %v after the last cool-off: %v, want %v", wgCoolOffMax, cool, wgCoolOff)
	}
	if p.expireDown(now.Add(wgCoolOffMax + time.Second + wgCoolOff)); len(p.down) != 1 {
		t.Errorf("down: %v", p.down)
	}
	if p.expireDown(now.Add(3 * wgCoolOffMax)); len(p.down) != 0 {
		t.Errorf("a streak older than %v is kept: %v", wgCoolOffMax, p.down)
	}
}

// TestPickWireGuard: a WireGuard exit takes one slot (not one that holds a slot, is on its way to
// one, is being left or was left lately), is never a rotation's target from itself, and is left
// out while down; a free one scores no load.
func TestPickWireGuard(t *testing.T) {
	w := &actors.WireGuardExit{Endpoint: "127.0.0.1:51820"}
	p := &poolActor{cfg: poolConfig{r: resolved{strategy: Spread}}, slots: map[int]*slotView{}, eligible: map[string]*messages.ExitEntry{},
		placedNew: map[string]int{}, down: map[string]*downExit{}, held: map[string]time.Time{}, rng: rand.New(rand.NewPCG(1, 2))}
	p.setWireGuard(map[string]*actors.WireGuardExit{"wg:a": w, "wg:b": w}, nil)
	x := &messages.ExitEntry{ID: "x", Capacity: 100, State: messages.ExitServing, Load: messages.ExitLoad{Sessions: 1}}
	refresh := func() {
		clear(p.eligible)
		p.eligible["x"] = x
		p.eligibleWireGuard(time.Now())
	}
	refresh()
	slot := func(i int, state messages.SlotState, exit string) *slotView {
		v := &slotView{index: i, state: state, exit: exit, avoid: map[string]time.Time{}}
		p.slots[i] = v
		return v
	}
	s0 := slot(0, messages.SlotWaiting, "")
	if got := p.pick(s0); got != "wg:a" {
		t.Fatalf("first slot: %s, want wg:a (free: no load, and the lower id)", got)
	}
	s0.exit = "wg:a"
	s1 := slot(1, messages.SlotWaiting, "")
	if got := p.pick(s1); got != "wg:b" {
		t.Fatalf("second slot: %s, want wg:b (wg:a holds one)", got)
	}
	s1.exit = "wg:b"
	s2 := slot(2, messages.SlotWaiting, "")
	for _, strategy := range []string{Spread, LeastLoaded, Random} {
		p.cfg.r.strategy = strategy
		if got := p.pick(s2); got != "x" {
			t.Fatalf("%s, third slot: %s, want x (each WireGuard exit holds one)", strategy, got)
		}
	}
	p.cfg.r.strategy = Spread
	// A rotation of the slot on wg:a: never to itself, and wg:b is taken.
	s0.state, s0.rotation = messages.SlotUp, true
	if got := p.pick(s0); got != "x" {
		t.Fatalf("rotation from wg:a: %s, want x", got)
	}
	// s1 moves off wg:b to x: wg:b is not free until the move ends, then held.
	s1.state, s1.from, s1.exit, s1.inflight = messages.SlotUp, "wg:b", "x", 1
	if got := p.pick(s2); got != "x" {
		t.Fatalf("while a slot moves off wg:b: %s, want x", got)
	}
	s1.from, s1.inflight = "", 0
	p.held["wg:b"] = time.Now().Add(time.Minute)
	if got := p.pick(s2); got != "x" {
		t.Fatalf("wg:b held: %s, want x", got)
	}
	delete(p.held, "wg:b")
	if got := p.pick(s2); got != "wg:b" {
		t.Fatalf("wg:b free: %s, want it", got)
	}
	p.markDown("wg:b", 0, time.Now())
	refresh()
	if got := p.pick(s2); got != "x" {
		t.Fatalf("wg:b down: %s, want x", got)
	}
	if why := p.whyIneligible("wg:b"); !strings.Contains(why, "down") {
		t.Errorf("why wg:b is not eligible: %q", why)
	}
}

func TestWireGuardConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key, server := "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	write("a.conf", "[Interface]\nPrivateKey = "+key+"\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = "+server+"\nEndpoint = 127.0.0.1:51820\nAllowedIPs = 0.0.0.0/0\n")
	write("notes.txt", "not a wg-quick file: ignored")
	no := false
	base := Config{Size: 1, SOCKSPorts: "127.0.0.1:20000"}
	good := base
	good.Exits = ExitFilter{WireGuardDir: dir, WireGuard: []string{"wg:home"}, IDs: []string{"wg:a", "wg:home", "x1"}}
	r, err := good.resolve()
	if err != nil || r.wgDir["wg:a"] == nil || len(r.wgDir) != 1 || !r.nats || len(r.wgNamed) != 1 {
		t.Fatalf("good: %+v, %v", r, err)
	}
	own, all, err := wireGuardExits(map[string]*actors.WireGuardExit{"wg:home": {ID: "wg:home"}, "wg:other": {ID: "wg:other"}}, r)
	if err != nil || len(own) != 2 || own["wg:a"] == nil || own["wg:home"] == nil || len(all) != 3 {
		t.Fatalf("wireGuardExits: own %v, all %v, %v", own, all, err)
	}
	if _, _, err := wireGuardExits(nil, r); !errors.Is(err, actors.ErrUnknownExit) || !strings.Contains(err.Error(), "pool.exits.wireguard[0]") {
		t.Errorf("wg:home not among the engine's: %v", err)
	}
	for _, tc := range []struct {
		field, says string
		mutate      func(*ExitFilter)
	}{
		{"pool.exits.wireguard_dir", "no such file", func(f *ExitFilter) { f.WireGuardDir = filepath.Join(dir, "missing") }},
		{"pool.exits.wireguard[0]", "wg:", func(f *ExitFilter) { f.WireGuard = []string{"home"} }},
		{"pool.exits.wireguard[1]", "also a file", func(f *ExitFilter) { f.WireGuardDir, f.WireGuard = dir, []string{"wg:home", "wg:a"} }},
		{"pool.exits.ids[0]", "neither", func(f *ExitFilter) { f.IDs = []string{"wg:nowhere"} }},
		{"pool.exits.ids[0]", "", func(f *ExitFilter) { f.IDs = []string{"wg:not ok"} }},
		{"pool.exits.nats", "no exits", func(f *ExitFilter) { f.NATS = &no }},
		{"pool.exits.labels", "nats: false", func(f *ExitFilter) { f.NATS, f.WireGuardDir, f.Labels = &no, dir, map[string]string{"region": "eu"} }},
	} {
		c := base
		tc.mutate(&c.Exits)
		err := c.Validate()
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.says) || !errors.Is(err, engine.ErrInvalidConfig) {
			t.Errorf("%s: %v, want a FieldError naming it, saying %q", tc.field, err, tc.says)
		}
	}
	// A file that does not parse: the error names the field, the file, its line and key.
	write("b.conf", "[Interface]\nPrivateKey = "+key+"\nAddress = 10.0.0.2/32\nMTU = lots\n")
	c := base
	c.Exits.WireGuardDir = dir
	err = c.Validate()
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Field != "pool.exits.wireguard_dir" || !strings.Contains(err.Error(), filepath.Join(dir, "b.conf")+":4: MTU") ||
		!errors.Is(err, engine.ErrWireGuardConfig) {
		t.Errorf("bad file: %v", err)
	}
}
