package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/internal/fakeexit"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// directoryEngine starts a client engine whose embedded NATS server listens on loopback, so that
// stand-in exits (fakeexit.Exit) can join; it trusts any exit (the bus is the test's).
func directoryEngine(t *testing.T) *Engine {
	return startTestEngine(t, Config{NATS: NATSConfig{EmbeddedListen: "127.0.0.1:0"}, Trust: TrustConfig{AnyExit: true}})
}

// watchDirectory registers a watcher actor with e's directory; it returns what the watcher hears.
func watchDirectory(t *testing.T, e *Engine) (*actor.PID, <-chan *messages.ExitDirectory) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dir, err := e.Directory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan *messages.ExitDirectory, 256)
	w := e.system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if d, ok := c.Message().(*messages.ExitDirectory); ok {
			snaps <- d
		}
	}))
	e.system.Root.Send(dir, &actors.WatchExits{PID: w})
	return w, snaps
}

func entryOf(d *messages.ExitDirectory, id string) *messages.ExitEntry {
	for _, x := range d.Exits {
		if x.ID == id {
			return x
		}
	}
	return nil
}

// TestDirectoryWatchers: a watcher hears a snapshot at once, then one when the first discovery
// round ends (Ready), and one at once for each join, drain and leave; a burst of load-only changes
// comes as one snapshot after about a second, with the last load; an entry that did not change is
// the same value in consecutive snapshots. An unwatched watcher hears nothing more.
func TestDirectoryWatchers(t *testing.T) {
	e := directoryEngine(t)
	a := fakeexit.New(t, e.NATSURL(), "exit-a")
	a.AnswerDiscovery(nil)
	w, snaps := watchDirectory(t, e)
	first := testutil.Await(t, snaps, 5*time.Second, "the first snapshot")
	ready := first
	for !ready.Ready {
		ready = testutil.Await(t, snaps, 5*time.Second, "the snapshot of the directory ready")
	}
	if len(ready.Exits) != 1 || ready.Exits[0].ID != "exit-a" {
		t.Fatalf("ready with %+v, want exit-a (it answered discovery)", ready.Exits)
	}

	b := fakeexit.New(t, e.NATSURL(), "exit-b")
	b.Announce(messages.ExitServing, messages.ExitLoad{})
	joined := testutil.Await(t, snaps, 2*time.Second, "the snapshot of exit-b's join")
	if len(joined.Exits) != 2 || joined.Exits[0].ID != "exit-a" || joined.Exits[1].ID != "exit-b" {
		t.Fatalf("after the join: %+v", joined.Exits)
	}

	// Twenty load changes at once: coalesced into one snapshot, a second after the last one sent.
	burst := time.Now()
	for i := 1; i <= 20; i++ {
		a.Announce(messages.ExitServing, messages.ExitLoad{Sessions: i})
	}
	load := testutil.Await(t, snaps, 3*time.Second, "the snapshot of the load changes")
	for entryOf(load, "exit-a").Load.Sessions != 20 {
		load = testutil.Await(t, snaps, 3*time.Second, "the snapshot with the last load")
	}
	took := time.Since(burst)
	if took < 500*time.Millisecond {
		t.Fatalf("load changes sent %v after a join's snapshot, want coalesced (about 1 s)", took)
	}
	if entryOf(load, "exit-b") != entryOf(joined, "exit-b") {
		t.Fatal("an unchanged entry is not shared between snapshots")
	}
	// A drain right after: at once, not coalesced.
	drained := time.Now()
	b.Announce(messages.ExitDraining, messages.ExitLoad{})
	d := testutil.Await(t, snaps, 2*time.Second, "the snapshot of exit-b draining")
	if x := entryOf(d, "exit-b"); x == nil || x.Serving() || time.Since(drained) > 500*time.Millisecond {
		t.Fatalf("after the drain (%v): %+v", time.Since(drained), x)
	}
	b.Announce(messages.ExitLeaving, messages.ExitLoad{})
	left := testutil.Await(t, snaps, 2*time.Second, "the snapshot of exit-b leaving")
	if len(left.Exits) != 1 || entryOf(left, "exit-b") != nil {
		t.Fatalf("after the leave: %+v", left.Exits)
	}

	// Unwatched, the first watcher hears nothing of a change a second watcher hears.
	dir, _ := e.Directory(context.Background())
	e.system.Root.Send(dir, &actors.UnwatchExits{PID: w})
	w2, snaps2 := watchDirectory(t, e)
	testutil.Await(t, snaps2, 2*time.Second, "the second watcher's first snapshot")
	a.Announce(messages.ExitDraining, messages.ExitLoad{})
	testutil.Await(t, snaps2, 2*time.Second, "the second watcher's snapshot of the drain")
	if s, ok := testutil.Recv(snaps, 200*time.Millisecond); ok {
		t.Fatalf("an unwatched watcher heard %+v", s)
	}

	// A watcher that stops is forgotten: nothing is sent to it any more (it would be a dead letter).
	var dead atomic.Int64
	sub := e.system.EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok && dl.PID != nil && dl.PID.Equal(w2) {
			dead.Add(1)
		}
	})
	defer e.system.EventStream.Unsubscribe(sub)
	if err := e.system.Root.StopFuture(w2).Wait(); err != nil {
		t.Fatal(err)
	}
	_, snaps3 := watchDirectory(t, e)
	testutil.Await(t, snaps3, 2*time.Second, "the third watcher's first snapshot")
	a.Announce(messages.ExitServing, messages.ExitLoad{})
	testutil.Await(t, snaps3, 2*time.Second, "the third watcher's snapshot of the change")
	if n := dead.Load(); n != 0 {
		t.Fatalf("%d snapshots sent to a watcher that stopped", n)
	}
}

// TestDirectoryLostIsReplaced: the directory stops without the engine asking (as a supervisor stops
// a panicking actor). The engine spawns a fresh one, which runs its own discovery round, and says
// so with an event; three times. The fourth loss within a minute is not replaced.
func TestDirectoryLostIsReplaced(t *testing.T) {
	e := directoryEngine(t)
	a := fakeexit.New(t, e.NATSURL(), "exit-a")
	a.Interval = time.Minute
	a.AnswerDiscovery(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for round := 1; round <= 4; round++ {
		old, err := e.Directory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if list, err := e.Exits(ctx); err != nil || len(list) != 1 || list[0].ID != "exit-a" {
			t.Fatalf("round %d: exits %v, %v", round, list, err)
		}
		e.system.Root.Stop(old)
		ev := nextEvent(t, e, 5*time.Second, func(ev Event) bool { return ev.Kind == EventChildLost })
		if round == 4 {
			if ev.Actor != "engine/exit directory" || ev.Cause != "not replaced: lost 4 times within 1m0s" {
				t.Fatalf("round %d: child lost event %+v", round, ev)
			}
			if _, err := e.Directory(ctx); !errors.Is(err, ErrNoDirectory) {
				t.Fatalf("Directory after the directory was given up: %v", err)
			}
			break
		}
		if ev.Actor != "engine/exit directory" || ev.Cause != "respawned" {
			t.Fatalf("round %d: child lost event %+v", round, ev)
		}
		now, err := e.Directory(ctx)
		if err != nil || now.Equal(old) {
			t.Fatalf("round %d: directory not replaced: %v → %v (%v)", round, old, now, err)
		}
	}
	if n := e.ActorPanics(); n != 0 {
		t.Fatalf("%d actor panics", n)
	}
}

// TestDirectoryErrors: Directory and Exits before Start, without signaling, and after Close.
func TestDirectoryErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Exits(ctx); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Exits before Start: %v", err)
	}

	e := startTestEngine(t, Config{})
	if list, err := e.Exits(ctx); err != nil || len(list) != 0 {
		t.Fatalf("Exits on a private bus with no exit: %v, %v", list, err)
	}
	e.system.Root.Stop(e.sigPID.Load())
	nextEvent(t, e, 5*time.Second, func(ev Event) bool { return ev.Kind == EventChildLost && ev.Actor == "engine/signaling" })
	// The directory there keeps what it had (its entries expire); a lost one is not replaced.
	dir, err := e.Directory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.system.Root.Stop(dir)
	ev := nextEvent(t, e, 5*time.Second, func(ev Event) bool { return ev.Kind == EventChildLost })
	if ev.Cause != "not replaced: no signaling" {
		t.Fatalf("child lost event %+v", ev)
	}
	if _, err := e.Directory(ctx); !errors.Is(err, ErrNoSignaling) {
		t.Fatalf("Directory without signaling: %v", err)
	}

	closed := startTestEngine(t, Config{})
	if err := closed.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := closed.Exits(ctx); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("Exits after Close: %v", err)
	}
}

// TestDirectoryAsksAgainAfterReconnect: when NATS comes back after a disconnect, the directory runs
// another discovery round rather than wait for each exit's cadence. (The connection's state changes
// are handed to signaling as nats.go reports them; here the test reports them.)
func TestDirectoryAsksAgainAfterReconnect(t *testing.T) {
	e := directoryEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if list, err := e.Exits(ctx); err != nil || len(list) != 0 {
		t.Fatalf("exits %v, %v", list, err)
	}
	x := fakeexit.New(t, e.NATSURL(), "late")
	x.Interval = time.Minute // it never announces: only a discovery round lists it
	var answered atomic.Int64
	x.AnswerDiscovery(&answered)
	sig := e.sigPID.Load()
	e.system.Root.Send(sig, &actors.NATSState{Connected: false, Err: errors.New("test: disconnected")})
	e.system.Root.Send(sig, &actors.NATSState{Connected: true, URL: e.NATSURL()})
	testutil.Poll(t, 5*time.Second, "the exit listed by a new round", e.Exits, func(l []*ExitEntry) bool { return len(l) == 1 && l[0].ID == "late" })
	if n := answered.Load(); n != 1 {
		t.Fatalf("%d discovery requests answered, want 1", n)
	}
}
