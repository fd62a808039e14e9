package test

// A pool of 60 slots over three exits on one NATS bus: every port carries traffic; rotation under
// a steady load fails no request; a new exit takes new and rotated slots (spread); resize; an exit
// drained under 20 downloads; an exit killed.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// poolExit starts an exit on ns that announces every second and takes a pool's sessions. (Faster
// cadences under -race on a loaded machine let announcements fall three intervals behind: the
// directory then drops live exits.)
func poolExit(t testing.TB, ns *natsServer, id string, labels map[string]string) *engine.Engine {
	return poolExitEvery(t, ns, id, labels, time.Second)
}

func poolExitEvery(t testing.TB, ns *natsServer, id string, labels map[string]string, announce time.Duration) *engine.Engine {
	t.Helper()
	return startExitEngine(t, id, func(c *engine.Config) {
		c.NATS.URLs = []string{ns.URL()}
		c.Exit.Labels = labels
		c.Exit.AnnounceInterval = engine.Duration(announce)
		c.Exit.DrainTimeout = engine.Duration(20 * time.Second)
		c.Exit.MaxSessionsPerClient = 1000
		c.Exit.RequestsPerSecond, c.Exit.RequestBurst = 1000, 1000
	})
}

type poolEnv struct {
	events *slotEvents
	ns     *natsServer
	exits  map[string]*engine.Engine
	client *engine.Engine
	pool   *pool.Pool
	echo   string
}

func newPoolEnv(t *testing.T, size int, ids ...string) *poolEnv {
	env := &poolEnv{ns: startNATS(t, nil), exits: map[string]*engine.Engine{}, echo: testutil.EchoServer(t).Addr()}
	for _, id := range ids {
		env.exits[id] = poolExit(t, env.ns, id, map[string]string{"region": "eu"})
	}
	env.client = startEngine(t, natsClient(env.ns))
	env.events = collectSlotEvents(env.client)
	ports, err := pool.ParsePortRange(testutil.FreePortRange(t, 200)) // SOCKS5 on the first 100, HTTP on the next
	if err != nil {
		t.Fatal(err)
	}
	socksR, httpR := ports, ports
	socksR.Count, httpR.Count, httpR.First = 100, 100, ports.First+100
	cfg := pool.Config{Size: size, SOCKSPorts: socksR.String(), HTTPPorts: httpR.String(),
		Exits: pool.ExitFilter{Labels: map[string]string{"region": "eu"}}, MaxMoves: 32}
	cfg.Tunnel.DrainTimeout = engine.Duration(15 * time.Second)
	cfg.Tunnel.UDPBind = "127.0.0.1"
	cfg.Tunnel.Health = fastHealth()
	cfg.Tunnel.Health.Interval = engine.Duration(500 * time.Millisecond) // a dead exit is found in 3 checks: 1.5 s
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pool.Open(ctx, env.client, cfg)
	if err != nil {
		t.Fatalf("pool.Open: %v", err)
	}
	env.pool = p
	return env
}

func (env *poolEnv) slots(t testing.TB) []pool.SlotInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := env.pool.Slots(ctx)
	if err != nil {
		t.Fatalf("Slots: %v", err)
	}
	return s
}

// slotEvents counts the client engine's slot transitions by the state entered.
type slotEvents struct {
	mu sync.Mutex
	to map[messages.SlotState]int
}

func collectSlotEvents(e *engine.Engine) *slotEvents {
	se := &slotEvents{to: map[messages.SlotState]int{}}
	go func() {
		for ev := range e.Events() { // closed when the engine has closed
			if ev.Kind == engine.EventSlotState && ev.SlotFrom != ev.SlotTo {
				se.mu.Lock()
				se.to[ev.SlotTo]++
				se.mu.Unlock()
			}
		}
	}()
	return se
}

func (se *slotEvents) count(to messages.SlotState) int {
	se.mu.Lock()
	defer se.mu.Unlock()
	return se.to[to]
}

// notUp describes the slots that are not up.
func notUp(slots []pool.SlotInfo) []string {
	var out []string
	for _, s := range slots {
		if s.State != messages.SlotUp {
			out = append(out, fmt.Sprintf("slot %d %s on %q: %s", s.Index, s.State, s.Exit, s.Cause))
		}
	}
	return out
}

// perExit counts the slots that are up on each exit; others counts the rest.
func perExit(slots []pool.SlotInfo) (map[string]int, int) {
	m, others := map[string]int{}, 0
	for _, s := range slots {
		if s.State == messages.SlotUp {
			m[s.Exit]++
		} else {
			others++
		}
	}
	return m, others
}

// echoThrough makes one connection through a slot's SOCKS5 port to the echo server and checks a
// round trip.
func echoThrough(socksAddr, echo string, msg string) error {
	c, rep, err := socksConnect(socksAddr, echo)
	if err != nil {
		return fmt.Errorf("socks connect via %s: reply %#x: %w", socksAddr, rep, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return roundTrip(c, msg)
}

// everyPortCarries checks a round trip through every slot's SOCKS5 port and a request through its
// HTTP port.
func (env *poolEnv) everyPortCarries(t testing.TB, slots []pool.SlotInfo, srv string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(slots))
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoThrough(s.SOCKSAddr, env.echo, fmt.Sprintf("slot %d", s.Index)); err != nil {
				errs <- fmt.Errorf("slot %d (%s, tunnel %s %s): %w", s.Index, s.Exit, s.Tunnel.ID, s.Tunnel.State, err)
			}
			if srv == "" {
				return
			}
			u, _ := url.Parse("http://" + s.HTTPAddr)
			c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 20 * time.Second}
			if err := download(c, srv, uint64(1000+s.Index), 4<<10); err != nil {
				errs <- fmt.Errorf("slot %d http (%s): %w", s.Index, s.Exit, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// steadyLoad sends requests round-robin through every slot's SOCKS5 port until stopped (or for at
// most a minute, or 100,000 requests), counting failures.
type steadyLoad struct {
	done          chan struct{}
	stopped       chan struct{}
	ok, failed    atomic.Int64
	mu            sync.Mutex
	firstFailures []error
}

func startLoad(env *poolEnv, slots []pool.SlotInfo, workers int) *steadyLoad {
	l := &steadyLoad{done: make(chan struct{}), stopped: make(chan struct{})}
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Minute)
	var next atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-l.done:
					return
				default:
				}
				n := next.Add(1)
				if n > 100000 {
					return
				}
				s := slots[int(n)%len(slots)]
				if err := echoThrough(s.SOCKSAddr, env.echo, "steady"); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.firstFailures) < 5 {
						l.firstFailures = append(l.firstFailures, fmt.Errorf("slot %d: %w", s.Index, err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	go func() { wg.Wait(); close(l.stopped) }()
	return l
}

func (l *steadyLoad) stop(t testing.TB, what string) {
	t.Helper()
	close(l.done)
	testutil.Await(t, l.stopped, 30*time.Second, "the steady load to stop")
	t.Logf("%s: %d requests succeeded, %d failed", what, l.ok.Load(), l.failed.Load())
	if l.failed.Load() > 0 {
		t.Errorf("%s: %d requests failed, want none; first: %v", what, l.failed.Load(), l.firstFailures)
	}
	if l.ok.Load() == 0 {
		t.Errorf("%s: no request succeeded", what)
	}
}

func TestPoolAcrossExits(t *testing.T) {
	const size = 60
	env := newPoolEnv(t, size, "pa", "pb", "pc")
	srv := newPayloadServer()
	defer srv.Close()

	slots := env.slots(t)
	counts, others := perExit(slots)
	if len(slots) != size || others != 0 || counts["pa"] != 20 || counts["pb"] != 20 || counts["pc"] != 20 {
		t.Fatalf("after Open: %d slots, %v up per exit, %d not up %v; want 60 up, 20 on each exit (spread)", len(slots), counts, others, notUp(slots))
	}
	env.everyPortCarries(t, slots, srv.URL)

	t.Run("rotation under load", func(t *testing.T) {
		load := startLoad(env, env.slots(t), 8)
		for round := 1; round <= 3; round++ {
			before := env.slots(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			moved, failed, err := env.pool.RotateAll(ctx, 8)
			cancel()
			if err != nil || moved != size || failed != 0 {
				t.Errorf("round %d: RotateAll: moved %d, failed %d, err %v; want %d moved", round, moved, failed, err, size)
			}
			for i, s := range env.slots(t) {
				if s.State != messages.SlotUp || s.Exit == before[i].Exit {
					t.Errorf("round %d: slot %d after rotation: %s on %s (was on %s), want up on another exit", round, i, s.State, s.Exit, before[i].Exit)
				}
			}
		}
		load.stop(t, "three rotations of all slots")
	})

	parent := t // exits started in a subtest live as long as the pool
	t.Run("new exit takes new and rotated slots", func(t *testing.T) {
		// pd announces every 3 s: killed, its slots' tunnels go Reconnecting (about 1.5 s) before the
		// directory drops it (9 s), so they heal by replacement (below).
		env.exits["pd"] = poolExitEvery(parent, env.ns, "pd", map[string]string{"region": "eu"}, 3*time.Second)
		env.exits["px"] = poolExit(parent, env.ns, "px", map[string]string{"region": "us"}) // filtered out
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		testutil.Eventually(t, 10*time.Second, "the pool's directory to list pd", func() bool {
			exits, err := env.client.Exits(ctx)
			if err != nil {
				return false
			}
			for _, e := range exits {
				if e.ID == "pd" {
					return true
				}
			}
			return false
		})
		if err := env.pool.Resize(ctx, 70); err != nil {
			t.Fatalf("Resize 70: %v", err)
		}
		slots := env.slots(t)
		for _, s := range slots[60:] {
			if s.Exit != "pd" || s.State != messages.SlotUp {
				t.Errorf("new slot %d: %s on %s (%s), want up on pd (spread: the emptiest exit)", s.Index, s.State, s.Exit, s.Cause)
			}
		}
		for i := 0; i < 5; i++ {
			if err := env.pool.Rotate(ctx, i); err != nil {
				t.Errorf("Rotate(%d): %v", i, err)
			}
		}
		slots = env.slots(t)
		counts, others := perExit(slots)
		if counts["pd"] != 15 || others != 0 || counts["px"] != 0 {
			t.Errorf("after 10 new slots and 5 rotations: %v up per exit, %d not up; want 15 on pd, none on px (filtered)", counts, others)
		}
		env.everyPortCarries(t, slots, "")
	})

	t.Run("resize", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := env.pool.Resize(ctx, 100); err != nil {
			t.Fatalf("Resize 100: %v", err)
		}
		slots := env.slots(t)
		if _, others := perExit(slots); len(slots) != 100 || others != 0 {
			t.Fatalf("after Resize 100: %d slots, %d not up: %v", len(slots), others, notUp(slots))
		}
		env.everyPortCarries(t, slots, "")
		if err := env.pool.Resize(ctx, 30); err != nil {
			t.Fatalf("Resize 30: %v", err)
		}
		slots = env.slots(t)
		if _, others := perExit(slots); len(slots) != 30 || others != 0 {
			t.Fatalf("after Resize 30: %d slots, %d not up: %v", len(slots), others, notUp(slots))
		}
		env.everyPortCarries(t, slots, "")
		// The removed slots' ports are closed.
		gone := pool.PortRange{}
		if r, err := pool.ParsePortRange(cfgSOCKS(env)); err == nil {
			gone = r
		}
		if c, err := net.DialTimeout("tcp", gone.AddrOf(30), time.Second); err == nil {
			c.Close()
			t.Errorf("slot 30's port %s still accepts after Resize 30", gone.AddrOf(30))
		}
		if err := env.pool.Resize(ctx, size); err != nil {
			t.Fatalf("Resize back to %d: %v", size, err)
		}
	})

	t.Run("exit drained under downloads", func(t *testing.T) {
		slow, started := slowServer(t)
		slots := env.slots(t)
		var victim string
		var on []pool.SlotInfo
		for _, id := range []string{"pa", "pb", "pc", "pd"} {
			on = on[:0]
			for _, s := range slots {
				if s.Exit == id {
					on = append(on, s)
				}
			}
			if len(on) >= 10 {
				victim = id
				break
			}
		}
		if victim == "" {
			t.Fatalf("no exit holds 10 slots: %v", slots)
		}
		const downloads = 20
		errs := make(chan error, downloads)
		for i := 0; i < downloads; i++ {
			s := on[i%len(on)]
			go func() {
				u, _ := url.Parse("socks5h://" + s.SOCKSAddr)
				c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: time.Minute}
				errs <- slowDownload(c, slow.URL, uint64(500+i), 2<<20, 4000)
			}()
		}
		for i := 0; i < downloads; i++ {
			awaitStarted(t, started)
		}
		load := startLoad(env, slots, 4)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := env.exits[victim].DrainExit(ctx); err != nil {
			t.Errorf("DrainExit(%s): %v", victim, err)
		}
		for i := 0; i < downloads; i++ {
			if err := testutil.Await(t, errs, time.Minute, "a download"); err != nil {
				t.Errorf("download through draining %s: %v", victim, err)
			}
		}
		load.stop(t, "drain of "+victim)
		after := env.slots(t)
		for _, s := range after {
			if s.Exit == victim || s.State != messages.SlotUp {
				t.Errorf("slot %d after %s drained: %s on %s (%s)", s.Index, victim, s.State, s.Exit, s.Cause)
			}
		}
		delete(env.exits, victim)
	})

	t.Run("exit killed", func(t *testing.T) {
		slots := env.slots(t)
		counts, _ := perExit(slots)
		victim := "pd" // it announces slowly: its tunnels find it dead first, and are replaced
		if counts[victim] == 0 {
			t.Fatalf("no slot on pd to heal: %v", counts)
		}
		replacedBefore := env.events.count(messages.SlotReplacing)
		killed := time.Now()
		env.exits[victim].Kill()
		delete(env.exits, victim)
		if !testutil.Until(10*time.Second, func(context.Context) bool {
			start := time.Now()
			counts, others := perExit(env.slots(t))
			if d := time.Since(start); d > time.Second {
				t.Logf("Slots took %v", d)
			}
			return counts[victim] == 0 && others == 0
		}) {
			slots := env.slots(t)
			counts, _ := perExit(slots)
			t.Fatalf("10 s after %s was killed: %v up per exit; not up: %v", victim, counts, notUp(slots))
		}
		// Every port carries new connections again.
		testutil.Eventually(t, 10*time.Second, "every port to carry a new connection", func() bool {
			for _, s := range env.slots(t) {
				if echoThrough(s.SOCKSAddr, env.echo, "after kill") != nil {
					return false
				}
			}
			return true
		})
		healed := time.Since(killed)
		if n := env.events.count(messages.SlotReplacing) - replacedBefore; n != counts[victim] {
			t.Errorf("%d slots replaced after %s was killed, want its %d (its tunnels were reconnecting)", n, victim, counts[victim])
		}
		t.Logf("exit %s (%d slots) killed: every port carries new connections after %v", victim, counts[victim], healed.Round(time.Millisecond))
		if healed > 5*time.Second*time.Duration(raceSlowdown) {
			t.Errorf("healed after %v, want within 5 s", healed)
		}
	})
}

func cfgSOCKS(env *poolEnv) string { return env.pool.SOCKSPorts().String() }
