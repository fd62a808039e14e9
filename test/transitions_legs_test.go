package test

// The leg's transitions (actors/leg.go), checked against docs/state-machines.md's "### Leg
// transitions" table: every leg of every TestTransitions row logs each transition it takes ("leg
// state", from, to, at debug) to legSteps; once all rows have run, every documented transition
// must have been taken and every one taken must be documented. Two rows exist for the leg alone:
// a switched-away leg that drains until its last connection ends, and one whose exit is lost while
// it drains.

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// legStep is one transition of a leg, as its log line names the states.
type legStep struct{ from, to string }

// legStepLog records the leg transitions logged through its handlers.
type legStepLog struct {
	mu   sync.Mutex
	seen map[legStep]int
}

var legSteps = &legStepLog{seen: map[legStep]int{}}

// logger returns a logger that records leg transitions and passes everything on to testLogger.
func (l *legStepLog) logger() *slog.Logger {
	return slog.New(&legStepHandler{log: l, next: testLogger().Handler()})
}

type legStepHandler struct {
	log  *legStepLog
	next slog.Handler
}

func (h *legStepHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *legStepHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "leg state" {
		var s legStep
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "from":
				s.from = a.Value.String()
			case "to":
				s.to = a.Value.String()
			}
			return true
		})
		h.log.mu.Lock()
		h.log.seen[s]++
		h.log.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *legStepHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &legStepHandler{log: h.log, next: h.next.WithAttrs(as)}
}

func (h *legStepHandler) WithGroup(name string) slog.Handler {
	return &legStepHandler{log: h.log, next: h.next.WithGroup(name)}
}

// checkLegSteps compares the leg transitions taken with the documented ones.
func checkLegSteps(t *testing.T) {
	t.Helper()
	doc := docLegTransitions(t)
	legSteps.mu.Lock()
	defer legSteps.mu.Unlock()
	for s, n := range legSteps.seen {
		if _, ok := doc[s]; !ok {
			t.Errorf("a leg went %s→%s (%d times), which docs/state-machines.md does not list", s.from, s.to, n)
		}
	}
	var taken []string
	for s, on := range doc {
		if legSteps.seen[s] == 0 {
			t.Errorf("docs/state-machines.md lists the leg transition %s→%s (on %s), which no row took", s.from, s.to, on)
		}
		taken = append(taken, s.from+"→"+s.to)
	}
	slices.Sort(taken)
	t.Logf("%d documented leg transitions, all taken: %v", len(doc), taken)
}

// docLegTransitions reads the "### Leg transitions" table (| from | to | on |).
func docLegTransitions(t testing.TB) map[legStep]string {
	t.Helper()
	data, err := os.ReadFile("../docs/state-machines.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[legStep]string{}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(line)
		switch {
		case s == "### Leg transitions":
			in = true
			continue
		case !in:
			continue
		case strings.HasPrefix(s, "#"):
			in = false
			continue
		case !strings.HasPrefix(s, "|"):
			continue
		}
		cells := strings.Split(strings.Trim(s, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("leg transitions: row %q has %d cells, want 3", s, len(cells))
		}
		from, to := strings.Trim(cells[0], "` "), strings.Trim(cells[1], "` ")
		if from == "from" || strings.HasPrefix(from, "---") {
			continue
		}
		out[legStep{from, to}] = strings.TrimSpace(cells[2])
	}
	if len(out) == 0 {
		t.Fatal("docs/state-machines.md has no \"### Leg transitions\" table")
	}
	return out
}

// switchedWithConn: the tunnel switched from a (reached through relayA) to b while a connection
// through a stays open on the old leg, which drains; the round trip proves the old leg still
// carries it.
func switchedWithConn(t *testing.T) (w *world, a *engine.Engine, relayA *Relay, tun *engine.Tunnel, c net.Conn) {
	echo := startServer(t, echoHandler)
	w = newWorld(t)
	a, relayA = w.relayed("a")
	w.exit("b", nil)
	tun = w.open(spec("a", 10*time.Second, calmHealth()))
	c = mustSocks(t, tun.SOCKSAddr(), echo.Addr())
	t.Cleanup(func() { c.Close() })
	wantNil(t, "round trip before the switch", roundTrip(c, "on a"))
	wantNil(t, "Switch to b", tun.Switch(bounded(t), "b", engine.WithDrainTimeout(time.Minute)))
	wantInfo(t, tun, stUp, "b", 0)
	wantNil(t, "round trip on the draining leg", roundTrip(c, "still on a"))
	return w, a, relayA, tun, c
}

// rowLegDrains: the old leg drains until its last connection ends, then is closed (its exit hears
// the goodbye).
func rowLegDrains(t *testing.T) rowRun {
	w, a, _, tun, c := switchedWithConn(t)
	c.Close()
	awaitSessionClosed(t, a)
	return rowRun{w.rec, tun}
}

// rowLegLostDraining: the old leg's exit goes away while the leg drains. Its data plane is
// blackholed first, so that only the exit's goodbye can tell the leg (the exit's resets of its
// flows would otherwise end the connection, and the leg with it, first): the leg fails and the
// tunnel ends its connection.
func rowLegLostDraining(t *testing.T) rowRun {
	w, a, relayA, tun, c := switchedWithConn(t)
	relayA.Blackhole()
	closeEngine(t, a)
	if err, _, _ := readUntilEnd(c, within); isTimeoutErr(err) {
		t.Fatalf("the connection on the lost draining leg did not end: %v", err)
	}
	return rowRun{w.rec, tun}
}
