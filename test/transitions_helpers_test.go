package test

// Helpers for TestTransitions (transitions_test.go, transitions_rows_test.go): a recorder of one
// tunnel's state events, the worlds the rows run in, a silent exit, a tunnel actor driven without
// an engine (the only way to reach a tunnel before Up), and the parser of the transition table in
// docs/state-machines.md.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

const (
	rowTunnel = "trow"           // every row's tunnel is named so: its ID is known before it opens
	within    = 20 * time.Second // bound of every wait in a row
)

// Short names of the tunnel states, for the rows' expected sequences.
const (
	stNeg  = messages.StateNegotiating
	stHs   = messages.StateHandshaking
	stUp   = messages.StateUp
	stDeg  = messages.StateDegraded
	stSw   = messages.StateSwitching
	stRcf  = messages.StateReconfiguring
	stRcn  = messages.StateReconnecting
	stDrn  = messages.StateDraining
	stClg  = messages.StateClosing
	stCld  = messages.StateClosed
	stFail = messages.StateFailed
)

var allStates = []messages.TunnelState{stNeg, stHs, stUp, stDeg, stSw, stRcf, stRcn, stDrn, stClg, stCld, stFail}

// step is one transition of a tunnel.
type step struct{ from, to messages.TunnelState }

func (s step) String() string { return string(s.from) + "→" + string(s.to) }

// path is the transitions along states: path(a, b, c) is a→b, b→c.
func path(states ...messages.TunnelState) []step {
	out := make([]step, 0, len(states)-1)
	for i := 1; i < len(states); i++ {
		out = append(out, step{states[i-1], states[i]})
	}
	return out
}

// recorder keeps every state event of one tunnel, in order.
type recorder struct {
	mu     sync.Mutex
	evs    []engine.Event
	notify chan struct{} // closed and replaced on every change
	ended  bool          // the feed closed
	next   int           // await's cursor
}

// record collects te's events of tunnel id (te must not be read by anything else).
func record(te *tunnelEvents, id string) *recorder {
	r := &recorder{notify: make(chan struct{})}
	wake := func() { close(r.notify); r.notify = make(chan struct{}) }
	go func() {
		for ev := range te.ch {
			if ev.Tunnel != id {
				continue
			}
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			wake()
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.ended = true
		wake()
		r.mu.Unlock()
	}()
	return r
}

// await waits for the next transition into to, after the one it last returned, and returns it. It
// fails if the tunnel is Closed first.
func (r *recorder) await(t testing.TB, to messages.TunnelState) engine.Event {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for r.next < len(r.evs) {
			ev := r.evs[r.next]
			r.next++
			if ev.To == to {
				r.mu.Unlock()
				return ev
			}
			if ev.To == stCld {
				r.mu.Unlock()
				t.Fatalf("tunnel closed while waiting for %s:\n%s", to, r.log())
			}
		}
		wait, ended := r.notify, r.ended
		r.mu.Unlock()
		if ended {
			t.Fatalf("events ended while waiting for %s:\n%s", to, r.log())
		}
		select {
		case <-wait:
		case <-deadline.C:
			t.Fatalf("no transition to %s within %v:\n%s", to, within, r.log())
		}
	}
}

// untilClosed waits for the tunnel to be Closed and returns every transition received (those after
// Closed too, if any).
func (r *recorder) untilClosed(t testing.TB) []step {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		closed := false
		for _, ev := range r.evs {
			closed = closed || ev.To == stCld
		}
		wait, ended := r.notify, r.ended
		r.mu.Unlock()
		if closed {
			return r.steps()
		}
		if ended {
			t.Fatalf("events ended before the tunnel was closed:\n%s", r.log())
		}
		select {
		case <-wait:
		case <-deadline.C:
			t.Fatalf("tunnel not closed within %v:\n%s", within, r.log())
		}
	}
}

func (r *recorder) steps() []step {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]step, len(r.evs))
	for i, ev := range r.evs {
		out[i] = step{ev.From, ev.To}
	}
	return out
}

// log is every transition so far with its cause, one a line.
func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, ev := range r.evs {
		fmt.Fprintf(&b, "\t%s→%s (%s)\n", ev.From, ev.To, ev.Cause)
	}
	return b.String()
}

// world is a standalone NATS server (stoppable) and a client engine on it whose tunnel is recorded;
// exits join it with exit and relayed.
type world struct {
	t      *testing.T
	ns     *natsServer
	client *engine.Engine
	rec    *recorder
}

func newWorld(t *testing.T) *world {
	ns := startNATS(t, nil)
	cfg := natsClient(ns)
	cfg.Logger = legSteps.logger() // the legs' transitions, checked against the docs after all rows
	client := startEngine(t, cfg)
	return &world{t: t, ns: ns, client: client, rec: record(watchTunnel(client), rowTunnel)}
}

// exit starts exit id on the world's NATS. It does not drain: closed, it ends at once and says
// goodbye, whatever flows are open (the rows are about the exit's loss; exit_drain_test.go is
// about its drain).
func (w *world) exit(id string, mutate func(*engine.Config)) *engine.Engine {
	return startExitEngine(w.t, id, func(c *engine.Config) {
		c.NATS.URLs = []string{w.ns.URL()}
		c.Exit.DrainTimeout = -1
		if mutate != nil {
			mutate(c)
		}
	})
}

// relayed starts exit id on the world's NATS, reached through a relay.
func (w *world) relayed(id string) (*engine.Engine, *Relay) { return relayedExit(w.t, id, w.ns.URL()) }

// open opens the row's tunnel; it must come up.
func (w *world) open(spec engine.TunnelSpec) *engine.Tunnel {
	w.t.Helper()
	spec.Name = rowTunnel
	return openTunnelSpec(w.t, w.client, spec)
}

// start opens the row's tunnel with StartTunnel: it returns once the listeners are bound.
func (w *world) start(spec engine.TunnelSpec) *engine.Tunnel {
	w.t.Helper()
	spec.Name, spec.UDPBind, spec.SOCKS, spec.HTTP = rowTunnel, "127.0.0.1", "127.0.0.1:0", "127.0.0.1:0"
	tun, err := w.client.StartTunnel(bounded(w.t), spec)
	if err != nil {
		w.t.Fatalf("StartTunnel: %v", err)
	}
	return tun
}

// openErr opens the row's tunnel, which must not come up, and returns why (an error saying it
// came up if it did: openErr runs off the test goroutine too, where it must not fail the test).
func (w *world) openErr(ctx context.Context, spec engine.TunnelSpec) error {
	spec.Name, spec.UDPBind = rowTunnel, "127.0.0.1"
	if spec.SOCKS == "" && spec.HTTP == "" {
		spec.SOCKS, spec.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	}
	tun, err := w.client.OpenTunnel(ctx, spec)
	if err == nil {
		_ = tun.Close(context.Background())
		return fmt.Errorf("OpenTunnel to %s came up; want an error", spec.Exit)
	}
	return err
}

// async runs f in a goroutine; its error arrives on the channel.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// result waits for an async call's error, within the bound.
func result(t testing.TB, ch <-chan error, what string) error {
	t.Helper()
	return testutil.Await(t, ch, within, what+" to return")
}

// bounded is a context for one call of a row.
func bounded(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	return ctx
}

// closeEngine closes e (an exit: it says goodbye to its clients) and waits.
func closeEngine(t testing.TB, e *engine.Engine) {
	t.Helper()
	if err := e.Close(bounded(t)); err != nil {
		t.Fatalf("engine Close: %v", err)
	}
}

// awaitSessionOpened waits for e's exit to grant a session.
func awaitSessionOpened(t testing.TB, e *engine.Engine) {
	awaitExitEvent(t, e, engine.EventSessionOpened)
}

// awaitSessionClosed waits for e's exit to release a session.
func awaitSessionClosed(t testing.TB, e *engine.Engine) {
	awaitExitEvent(t, e, engine.EventSessionClosed)
}

// awaitExitEvent waits for an event of kind on e's events (an exit engine's: nothing else reads them).
func awaitExitEvent(t testing.TB, e *engine.Engine, kind engine.EventKind) {
	t.Helper()
	testutil.AwaitMatch(t, e.Events(), within, string(kind), func(ev engine.Event) bool { return ev.Kind == kind })
}

// awaitCurrentLost waits until the switching tunnel has released its old leg (lost under it): it
// is still Switching and has no current session. No event marks this; the tunnel's Info does.
func awaitCurrentLost(t testing.TB, tun *engine.Tunnel) {
	t.Helper()
	testutil.Poll(t, within, "the old exit's loss to reach the switching tunnel", tun.Info, func(info engine.TunnelInfo) bool {
		if info.State != stSw {
			t.Fatalf("tunnel %s while its old exit was being lost mid-switch, want switching", info.State)
		}
		return info.SessionID == ""
	})
}

// silentExit subscribes to exit id's subject and never answers: a session request to it waits for
// its deadline. Each request received is signalled on the channel.
func silentExit(t testing.TB, ns *natsServer, id string) <-chan struct{} {
	t.Helper()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	got := make(chan struct{}, 16)
	if _, err := nc.Subscribe(signaling.ExitSubject(id), func(*nats.Msg) {
		select {
		case got <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// heard waits for one signal on ch.
func heard(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	testutil.Await(t, ch, within, what)
}

// bareTunnel is a tunnel actor spawned without an engine, on its own actor system and NATS
// connection, with a signaling actor of its own. engine.OpenTunnel returns a handle only once the
// tunnel is Up, so what a tunnel answers before Up is reachable only so. Its state events are
// recorded like an engine's.
type bareTunnel struct {
	system *actor.ActorSystem
	pid    *actor.PID
	rec    *recorder
	opened *actor.Future // the opener: one messages.OpenTunnelResponse
}

func newBareTunnel(t testing.TB, ns *natsServer, exitID string) *bareTunnel {
	t.Helper()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	id, err := signaling.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return testLogger() }))
	te := &tunnelEvents{ch: make(chan engine.Event, 256)}
	events := system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*messages.TunnelStateChanged); ok {
			te.ch <- engine.Event{Time: m.At, Kind: engine.EventTunnelState, Tunnel: m.TunnelID, From: m.From, To: m.To, Cause: m.Cause}
		}
	}))
	sig := system.Root.Spawn(actors.NewSignalingProps(actors.SignalingConfig{Conn: nc, Logger: testLogger(), ClientID: id.ID(), Identity: id}))
	bt := &bareTunnel{system: system, rec: record(te, rowTunnel), opened: actor.NewFuture(system, 2*within)}
	bt.pid = system.Root.Spawn(actors.NewTunnelProps(actors.TunnelConfig{
		ID: rowTunnel, ExitID: exitID, UDPBind: netip.MustParseAddr("127.0.0.1"), HandshakeTimeout: within,
		DrainTimeout: time.Second, Identity: id, Trust: signaling.ExitTrust{AnyExit: true},
		Signaling: sig, Events: events, Logger: testLogger(), ReplyTo: bt.opened.PID(),
		Health: actors.HealthPolicy{Interval: time.Second, ProbeTimeout: 750 * time.Millisecond, Failures: 3,
			SignalingInterval: 2 * time.Second, SignalingTimeout: 2 * time.Second, SignalingFailures: 2},
		Backoff: actors.Backoff{Min: 250 * time.Millisecond, Max: 10 * time.Second}, ReconnectWait: 10 * time.Second,
	}))
	t.Cleanup(func() {
		for _, pid := range []*actor.PID{bt.pid, sig, events} {
			_ = system.Root.StopFuture(pid).Wait()
		}
		close(te.ch)
		system.Shutdown()
		nc.Close()
	})
	return bt
}

// ask sends msg to the tunnel and returns its answer.
func (bt *bareTunnel) ask(t testing.TB, msg any) any {
	t.Helper()
	res, err := bt.system.Root.RequestFuture(bt.pid, msg, within).Result()
	if err != nil {
		t.Fatalf("%T: %v", msg, err)
	}
	return res
}

// docTransitions parses the table under "### Tunnel transitions" in docs/state-machines.md: one
// row per transition, | from | to | on |, states named as messages.TunnelState (any case).
func docTransitions(t testing.TB) map[step]string {
	t.Helper()
	known := map[string]messages.TunnelState{}
	for _, s := range allStates {
		known[string(s)] = s
	}
	out := map[step]string{}
	for _, r := range docTable(t, "### Tunnel transitions") {
		from, okFrom := known[strings.ToLower(r.from)]
		to, okTo := known[strings.ToLower(r.to)]
		if !okFrom || !okTo {
			t.Fatalf("%s:%d: %q → %q is not between tunnel states", stateMachinesDoc, r.line, r.from, r.to)
		}
		out[step{from, to}] = r.on
	}
	return out
}

const stateMachinesDoc = "../docs/state-machines.md"

// docRow is one row of a transition table: | from | to | on |.
type docRow struct {
	from, to, on string
	line         int
}

// docTable reads the transition table under heading in docs/state-machines.md: its header must be
// | from | to | on |, every row must have all three cells, and no from → to may be listed twice.
func docTable(t testing.TB, heading string) []docRow {
	t.Helper()
	data, err := os.ReadFile(stateMachinesDoc)
	if err != nil {
		t.Fatal(err)
	}
	var out []docRow
	seen := map[[2]string]bool{}
	in, header := false, false
	for i, line := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(line)
		if !in {
			in = s == heading
			continue
		}
		if !strings.HasPrefix(s, "|") {
			if header || strings.HasPrefix(s, "#") {
				break // the end of the table, or the next heading and no table
			}
			continue
		}
		cells := strings.Split(strings.Trim(s, "|"), "|")
		for j := range cells {
			cells[j] = strings.Trim(strings.TrimSpace(cells[j]), "`")
		}
		switch {
		case !header:
			if len(cells) != 3 || cells[0] != "from" || cells[1] != "to" || cells[2] != "on" {
				t.Fatalf("%s:%d: the table's header is %q, want | from | to | on |", stateMachinesDoc, i+1, s)
			}
			header = true
		case strings.Trim(cells[0], "-: ") == "":
			// the separator
		default:
			if len(cells) != 3 || cells[2] == "" {
				t.Fatalf("%s:%d: want | from | to | on |, got %q", stateMachinesDoc, i+1, s)
			}
			if key := [2]string{cells[0], cells[1]}; seen[key] {
				t.Fatalf("%s:%d: %s → %s listed twice", stateMachinesDoc, i+1, cells[0], cells[1])
			} else {
				seen[key] = true
			}
			out = append(out, docRow{from: cells[0], to: cells[1], on: cells[2], line: i + 1})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no table of transitions under %q", stateMachinesDoc, heading)
	}
	return out
}
