package test

// Pools over WireGuard exits (docs/pool.md#wireguard-exits): plain WireGuard servers
// (testutil.WGServer, no Warren code) whose client files sit in a directory, beside a Warren exit
// on NATS.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// nameSize is what a name server sends after its name: nameSize bytes of Payload(its seed).
const nameSize = 16 << 10

// nameServer answers every connection with "name\n" and nameSize payload bytes of seed, then
// closes: what a client reads says which origin answered, and proves the bytes intact.
func nameServer(t testing.TB, name string, seed uint64) *testutil.Server {
	return startServer(t, func(c *net.TCPConn, _ <-chan struct{}) {
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(append([]byte(name+"\n"), testutil.PayloadBytes(seed, nameSize)...)); err == nil {
			_ = c.CloseWrite()
		}
	})
}

// fetchName connects through the SOCKS5 proxy socks to target, reads a name server's answer and
// checks its payload by the seed of the name it gave.
func fetchName(socks, target string, seeds map[string]uint64) (string, error) {
	c, code, err := socksConnect(socks, target)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if code != socksSucceeded {
		return "", fmt.Errorf("socks5 reply %#x", code)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the name: %w", err)
	}
	name = strings.TrimSuffix(name, "\n")
	seed, ok := seeds[name]
	if !ok {
		return name, fmt.Errorf("an unknown name %q", name)
	}
	return name, testutil.CheckPayload(r, seed, nameSize)
}

// slotLog records a client engine's slot transitions.
type slotLog struct {
	mu  sync.Mutex
	evs []engine.Event
}

func recordSlots(e *engine.Engine) *slotLog {
	l := &slotLog{}
	go func() {
		for ev := range e.Events() { // closed once the engine has closed
			if ev.Kind == engine.EventSlotState {
				l.mu.Lock()
				l.evs = append(l.evs, ev)
				l.mu.Unlock()
			}
		}
	}()
	return l
}

// placedOn lists the transitions since `since` that sent a slot to exit (opening, moving or
// replacing towards it).
func (l *slotLog) placedOn(exit string, since time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ev := range l.evs {
		to := ev.SlotTo
		if ev.Exit == exit && !ev.Time.Before(since) && (to == messages.SlotOpening || to == messages.SlotMoving || to == messages.SlotReplacing) {
			out = append(out, fmt.Sprintf("slot %d %s→%s: %s", ev.Slot, ev.SlotFrom, to, ev.Cause))
		}
	}
	return out
}

// placedOnState counts the transitions into state towards exit since `since`.
func (l *slotLog) placedOnState(exit string, state messages.SlotState, since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.evs {
		if ev.Exit == exit && ev.SlotTo == state && ev.SlotFrom != state && !ev.Time.Before(since) {
			n++
		}
	}
	return n
}

// wgPoolHealth finds a dead WireGuard exit fast: 3 failed probes 250 ms apart.
func wgPoolHealth() engine.HealthConfig {
	h := fastHealth()
	h.Interval, h.ProbeTimeout, h.Failures = engine.Duration(250*time.Millisecond), engine.Duration(200*time.Millisecond), 3
	return h
}

// wgPoolSpec is the slots' tunnel settings of these tests.
func wgPoolSpec() engine.TunnelSpec {
	return engine.TunnelSpec{UDPBind: "127.0.0.1", DrainTimeout: engine.Duration(time.Second), Health: wgPoolHealth(),
		HandshakeTimeout: engine.Duration(3 * time.Second)}
}

// checkPoolSlots checks that every slot is up, that they are spread as want says, and that each
// slot's port fetches through its exit: the origin behind that exit answers (names[exit]), its
// bytes intact. target gives the address to ask through an exit.
func checkPoolSlots(t *testing.T, p *pool.Pool, want map[string]int, names map[string]string, seeds map[string]uint64, target func(exit string) string) []pool.SlotInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slots, err := p.Slots(ctx)
	if err != nil {
		t.Fatalf("Slots: %v", err)
	}
	counts, others := perExit(slots)
	if others != 0 || (want != nil && !maps.Equal(counts, want)) {
		t.Fatalf("%v up per exit, %d not up %v; want %v", counts, others, notUp(slots), want)
	}
	for _, s := range slots {
		name, err := fetchName(s.SOCKSAddr, target(s.Exit), seeds)
		if err != nil || name != names[s.Exit] {
			t.Errorf("slot %d on %s: %q answered, %v; want %q", s.Index, s.Exit, name, err, names[s.Exit])
		}
	}
	return slots
}

// TestPoolWireGuardExits: a pool of 4 over two WireGuard servers (a directory of their files) and a
// Warren exit spreads over all three, one slot per WireGuard exit (one key is one peer); each port
// fetches through its own exit. One server closed: its slot moves within the health policy's
// bound, the exit is held down, and while it is — the server back, with the same keys — a
// rotation of every slot sends nothing to it.
func TestPoolWireGuardExits(t *testing.T) {
	ns := startNATS(t, nil)
	poolExit(t, ns, "wpx", nil)
	seeds := map[string]uint64{"A": 1, "B": 2, "W": 3}
	originA, originB, originW := nameServer(t, "A", 1), nameServer(t, "B", 2), nameServer(t, "W", 3)
	srvA := startWGServerFor(t, originA.Addr(), testutil.WGServerConfig{})
	srvB := startWGServerFor(t, originB.Addr(), testutil.WGServerConfig{})
	dir := t.TempDir()
	srvA.WriteClientConfigIn(t, dir, "a")
	srvB.WriteClientConfigIn(t, dir, "b")
	client := startEngine(t, natsClient(ns))
	trail := recordSlots(client)
	cfg := pool.Config{Name: "wgp", Size: 4, SOCKSPorts: testutil.FreePortRange(t, 4), Exits: pool.ExitFilter{WireGuardDir: dir}, Tunnel: wgPoolSpec()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opened := time.Now()
	p, err := pool.Open(ctx, client, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	defer p.Close(context.Background(), -1)
	t.Logf("4 slots up in %v", time.Since(opened).Round(time.Millisecond))
	names := map[string]string{"wg:a": "A", "wg:b": "B", "wpx": "W"}
	target := func(exit string) string {
		if strings.HasPrefix(exit, "wg:") { // both servers forward their own address's port to their origin
			return fmt.Sprintf("%s:%d", srvA.Address(), wgOrigin)
		}
		return originW.Addr()
	}
	slots := checkPoolSlots(t, p, map[string]int{"wg:a": 1, "wg:b": 1, "wpx": 2}, names, seeds, target)
	if srvA.Received() == 0 || srvB.Received() == 0 {
		t.Errorf("the servers received %d and %d bytes, want some each", srvA.Received(), srvB.Received())
	}

	// B stops answering. One connection through its slot (data nothing answers) makes the
	// tunnel a suspect at once; an idle one would wait for its next probe (at most 5 s).
	var onB pool.SlotInfo
	for _, s := range slots {
		if s.Exit == "wg:b" {
			onB = s
		}
	}
	h := wgPoolHealth()
	// Found dead within the idle probe gap (5 s) plus failures × interval and a probe timeout;
	// replaced on wpx within 2 s more.
	bound := 5*time.Second + time.Duration(raceSlowdown)*(time.Duration(h.Failures)*time.Duration(h.Interval)+time.Duration(h.ProbeTimeout)+2*time.Second)
	bKeys := [2][32]byte{srvB.PrivateKey(), srvB.ClientKey()}
	closed := time.Now()
	srvB.Close()
	dead := make(chan error, 1)
	go func() {
		_, err := fetchName(onB.SOCKSAddr, target("wg:b"), seeds)
		dead <- err
	}()
	testutil.Eventually(t, bound, "the slot on wg:b to move", func() bool {
		s, err := p.Slots(ctx)
		counts, others := perExit(s)
		return err == nil && others == 0 && counts["wg:b"] == 0 && counts["wg:a"] == 1 && counts["wpx"] == 3
	})
	t.Logf("wg:b closed: its slot up on wpx %v later (bound %v)", time.Since(closed).Round(time.Millisecond), bound)
	if err := testutil.Await(t, dead, 15*time.Second, "the connection through the dead server"); err == nil {
		t.Error("a fetch through the closed server succeeded")
	}
	down, err := p.DownExits(ctx)
	if until, ok := down["wg:b"]; err != nil || len(down) != 1 || !ok || until.Before(closed.Add(30*time.Second)) || until.After(time.Now().Add(30*time.Second)) {
		t.Fatalf("DownExits: %v, %v; want wg:b down for 30 s from when its slot failed", down, err)
	}
	checkPoolSlots(t, p, map[string]int{"wg:a": 1, "wpx": 3}, names, seeds, target)

	// B back, same keys and port: it would take a slot at once, but it is cooling off.
	srvB2 := startWGServerFor(t, originB.Addr(), testutil.WGServerConfig{PrivateKey: &bKeys[0], ClientKey: &bKeys[1], ListenAddr: srvB.Endpoint().String()})
	moved, failed, err := p.RotateAll(ctx, 0)
	t.Logf("RotateAll during wg:b's cool-off: %d moved, %d found no other exit", moved, failed)
	if err != nil || moved+failed != 4 || moved == 0 {
		t.Errorf("RotateAll: moved %d, failed %d, %v; want the 4 slots rotated (some may find no other exit)", moved, failed, err)
	}
	after := checkPoolSlots(t, p, nil, names, seeds, target)
	counts, _ := perExit(after)
	if counts["wg:b"] != 0 || counts["wg:a"] > 1 {
		t.Errorf("after RotateAll during wg:b's cool-off: %v up per exit; want none on wg:b, at most one on wg:a", counts)
	}
	if placed := trail.placedOn("wg:b", closed); len(placed) > 0 {
		t.Errorf("slots sent to wg:b during its cool-off: %v", placed)
	}
	if n := srvB2.Received(); n != 0 {
		t.Errorf("the restarted server received %d bytes during the cool-off, want 0", n)
	}
	if down, err := p.DownExits(ctx); err != nil || down["wg:b"].IsZero() {
		t.Errorf("DownExits after the rotation: %v, %v; want wg:b still down", down, err)
	}
}

// TestPoolWireGuardUpdate: a pool of WireGuard exits only (nats: false): the files of its
// directory and an engine wireguard_exits entry. Update with another directory moves the slot on a
// file that went to one that came (make-before-break: its tunnel learns the new configuration
// first); Update with the same settings reads the directory again (a file added is an exit).
func TestPoolWireGuardUpdate(t *testing.T) {
	seeds := map[string]uint64{"A": 11, "B": 12, "C": 13, "D": 14}
	srv := map[string]*testutil.WGServer{}
	for name, seed := range seeds {
		srv[name] = startWGServerFor(t, nameServer(t, name, seed).Addr(), testutil.WGServerConfig{})
	}
	dir1, dir2 := t.TempDir(), t.TempDir()
	srv["A"].WriteClientConfigIn(t, dir1, "a")
	srv["B"].WriteClientConfigIn(t, dir2, "b")
	client := startEngine(t, engine.Config{WireGuardExits: []engine.WireGuardExitSpec{{Name: "home", File: srv["C"].WriteClientConfig(t)}}})
	trail := recordSlots(client)
	no := false
	cfg := pool.Config{Name: "wgu", Size: 2, SOCKSPorts: testutil.FreePortRange(t, 2), Tunnel: wgPoolSpec(),
		Exits: pool.ExitFilter{NATS: &no, WireGuardDir: dir1, WireGuard: []string{"wg:home"}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pool.Open(ctx, client, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	defer p.Close(context.Background(), -1)
	names := map[string]string{"wg:a": "A", "wg:b": "B", "wg:home": "C", "wg:d": "D"}
	target := func(string) string { return fmt.Sprintf("%s:%d", srv["A"].Address(), wgOrigin) }
	checkPoolSlots(t, p, map[string]int{"wg:a": 1, "wg:home": 1}, names, seeds, target)

	next := cfg
	next.Exits.WireGuardDir = dir2
	updated := time.Now()
	if changed, err := p.Update(ctx, next); err != nil || !equalStrings(changed, []string{"pool.exits"}) {
		t.Fatalf("Update to dir2: %v, %v; want [pool.exits]", changed, err)
	}
	testutil.Eventually(t, 10*time.Second, "the slot on wg:a to move to wg:b", func() bool {
		s, err := p.Slots(ctx)
		counts, others := perExit(s)
		return err == nil && others == 0 && counts["wg:b"] == 1 && counts["wg:home"] == 1
	})
	checkPoolSlots(t, p, map[string]int{"wg:b": 1, "wg:home": 1}, names, seeds, target)
	if moving, replacing := trail.placedOnState("wg:b", messages.SlotMoving, updated), trail.placedOnState("wg:b", messages.SlotReplacing, updated); moving != 1 || replacing != 0 {
		t.Errorf("to wg:b: %d moves and %d replacements, want one move (make-before-break)", moving, replacing)
	}

	if changed, err := p.Update(ctx, next); err != nil || len(changed) != 0 {
		t.Errorf("Update with nothing changed: %v, %v; want no change", changed, err)
	}
	srv["D"].WriteClientConfigIn(t, dir2, "d")
	if changed, err := p.Update(ctx, next); err != nil || !equalStrings(changed, []string{"pool.exits"}) {
		t.Fatalf("Update after a file was added: %v, %v; want [pool.exits]", changed, err)
	}
	slots, err := p.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Exit == "wg:b" {
			if err := p.Rotate(ctx, s.Index); err != nil {
				t.Fatalf("Rotate(%d): %v", s.Index, err)
			}
		}
	}
	checkPoolSlots(t, p, map[string]int{"wg:d": 1, "wg:home": 1}, names, seeds, target)
}

// TestPoolWireGuardDirErrors: a file of wireguard_dir that does not parse fails pool.Open, naming
// the field, the file and its line; an exits.wireguard id the engine does not have names its entry.
func TestPoolWireGuardDirErrors(t *testing.T) {
	srvA := startWGServerFor(t, "127.0.0.1:1", testutil.WGServerConfig{})
	dir := t.TempDir()
	srvA.WriteClientConfigIn(t, dir, "a")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("[Interface]\nPrivateKey = nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := startEngine(t, engine.Config{})
	no := false
	cfg := pool.Config{Size: 1, SOCKSPorts: testutil.FreePortRange(t, 1), Tunnel: wgPoolSpec(), Exits: pool.ExitFilter{NATS: &no, WireGuardDir: dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := pool.Open(ctx, client, cfg)
	var fe *engine.FieldError
	if err == nil {
		p.Close(ctx, -1)
	}
	if !errors.As(err, &fe) || fe.Field != "pool.exits.wireguard_dir" || !strings.Contains(err.Error(), bad+":2: PrivateKey") ||
		!errors.Is(err, engine.ErrWireGuardConfig) {
		t.Errorf("pool.Open with a bad file: %v; want a FieldError naming pool.exits.wireguard_dir and %s:2: PrivateKey", err, bad)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	cfg.Exits.WireGuard = []string{"wg:nowhere"}
	p, err = pool.Open(ctx, client, cfg)
	if err == nil {
		p.Close(ctx, -1)
	}
	if !errors.As(err, &fe) || fe.Field != "pool.exits.wireguard[0]" {
		t.Errorf("pool.Open naming an unknown engine exit: %v; want a FieldError naming pool.exits.wireguard[0]", err)
	}
}

// TestPoolWireGuardDeadAtOpen: a WireGuard exit whose server does not answer fails its slot's open
// (no handshake within handshake_timeout) and is held down; with no other exit free the slot
// waits, and Open returns.
func TestPoolWireGuardDeadAtOpen(t *testing.T) {
	live := startWGServerFor(t, nameServer(t, "A", 21).Addr(), testutil.WGServerConfig{})
	dead := startWGServerFor(t, "127.0.0.1:1", testutil.WGServerConfig{})
	dir := t.TempDir()
	live.WriteClientConfigIn(t, dir, "a")
	dead.WriteClientConfigIn(t, dir, "z")
	dead.Close()
	client := startEngine(t, engine.Config{})
	no := false
	spec := wgPoolSpec()
	spec.HandshakeTimeout = engine.Duration(time.Second)
	cfg := pool.Config{Size: 2, SOCKSPorts: testutil.FreePortRange(t, 2), Tunnel: spec, Exits: pool.ExitFilter{NATS: &no, WireGuardDir: dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opened := time.Now()
	p, err := pool.Open(ctx, client, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	defer p.Close(context.Background(), -1)
	t.Logf("Open returned after %v", time.Since(opened).Round(time.Millisecond))
	slots, err := p.Slots(ctx)
	if err != nil || len(slots) != 2 || slots[0].State != messages.SlotUp || slots[0].Exit != "wg:a" ||
		slots[1].State != messages.SlotWaiting || !strings.Contains(slots[1].Cause, "did not come up in time") {
		t.Fatalf("slots %+v, %v; want slot 0 up on wg:a, slot 1 waiting after wg:z's handshake timed out", slots, err)
	}
	if name, err := fetchName(slots[0].SOCKSAddr, fmt.Sprintf("%s:%d", live.Address(), wgOrigin), map[string]uint64{"A": 21}); err != nil || name != "A" {
		t.Errorf("slot 0: %q, %v; want A", name, err)
	}
	if down, err := p.DownExits(ctx); err != nil || len(down) != 1 || down["wg:z"].IsZero() {
		t.Errorf("DownExits: %v, %v; want wg:z", down, err)
	}
}
