package engine

// What an operator surface (admin API, metrics, health checks) reads of a running engine: its
// counters, its NATS connection's state, when it started, and whether its actors answer.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// TunnelTransition is one kind of tunnel transition (docs/state-machines.md).
type TunnelTransition struct{ From, To messages.TunnelState }

// Histogram is a snapshot of a histogram of durations.
type Histogram struct {
	Bounds []float64 // upper bounds of the buckets, in seconds, ascending
	Counts []uint64  // per bucket, not cumulative: len(Bounds)+1, the last one beyond the last bound (+Inf)
	Sum    float64   // of every observation, in seconds
	Count  uint64    // observations (the sum of Counts)
}

// Counters are the engine's monotonic counters since Start, for metrics.
type Counters struct {
	// Transitions counts every transition of every tunnel of the engine, pools' tunnels included.
	Transitions map[TunnelTransition]uint64
	// Reconnects counts reconnections begun (transitions into Reconnecting) by the class of their
	// cause: each of messages.ReconnectCauses, zero or not (docs/health.md).
	Reconnects map[string]uint64
	// SignalingRTT: the round trips of signaling, from a session request's publish to its verified
	// answer (a grant or a signed refusal; an unverified reply is no answer) and from a health
	// ping to its verified pong, over actors.SignalingRTTBounds.
	SignalingRTT Histogram
}

// counters are what Counters reports of tunnel transitions; counted by the engine actor (sink).
type counters struct {
	mu          sync.Mutex
	transitions map[TunnelTransition]uint64
	reconnects  map[string]uint64
}

func (c *counters) transition(m *messages.TunnelStateChanged) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.transitions == nil {
		c.transitions, c.reconnects = map[TunnelTransition]uint64{}, map[string]uint64{}
	}
	c.transitions[TunnelTransition{m.From, m.To}]++
	if m.To == messages.StateReconnecting {
		class := m.Reconnect
		if !slices.Contains(messages.ReconnectCauses, class) {
			class = messages.ReconnectOther
		}
		c.reconnects[class]++
	}
}

// Counters returns the engine's counters (zero before Start). It waits for no actor: the counts
// are kept as the engine actor hands the events on, so a transition shows here at about the time
// its event is sent on Events.
func (e *Engine) Counters() Counters {
	e.counters.mu.Lock()
	out := Counters{Transitions: maps.Clone(e.counters.transitions), Reconnects: maps.Clone(e.counters.reconnects)}
	e.counters.mu.Unlock()
	if out.Transitions == nil {
		out.Transitions, out.Reconnects = map[TunnelTransition]uint64{}, map[string]uint64{}
	}
	for _, class := range messages.ReconnectCauses {
		out.Reconnects[class] += 0
	}
	counts, sum, count := e.sigStats.RTT.Snapshot()
	out.SignalingRTT = Histogram{Bounds: slices.Clone(actors.SignalingRTTBounds[:]), Counts: counts, Sum: sum, Count: count}
	return out
}

// NATSStatus is the state of the engine's NATS connection.
type NATSStatus struct {
	Connected bool
	// URL is the server connected to, or, while disconnected, the one last used (the first of
	// nats.urls before any): passwords redacted; signaling.InProcessURL for the embedded server.
	URL string
	// LastError is the last error the connection reported (why it disconnected, or why it could
	// not connect yet), kept once it has reconnected; "" if none.
	LastError string
	Since     time.Time // when it entered its current state (connected or not)
}

// NATSStatus reports the NATS connection's state (zero before Start). It waits for no actor.
func (e *Engine) NATSStatus() NATSStatus {
	st := e.nats.Load()
	if st == nil {
		return NATSStatus{}
	}
	out := *st
	if nc := e.nc.Load(); out.LastError == "" && !out.Connected && nc != nil {
		if err := nc.LastError(); err != nil {
			out.LastError = err.Error()
		}
	}
	return out
}

// natsStarted records the state of a connection just made (unless nats.go reported one already).
func (e *Engine) natsStarted(nc *nats.Conn) {
	e.nc.Store(nc)
	st := &NATSStatus{Connected: nc.IsConnected(), URL: nc.ConnectedUrlRedacted(), Since: time.Now()}
	if st.URL == "" {
		st.URL = signaling.RedactURLs(e.natsURL)
	}
	e.nats.CompareAndSwap(nil, st)
}

// natsChanged records a change nats.go reported (on its callback goroutine, one at a time).
func (e *Engine) natsChanged(s signaling.ConnState) {
	old := e.nats.Load()
	st := &NATSStatus{Connected: s.Status == nats.CONNECTED, URL: s.URL, Since: time.Now()}
	if old != nil {
		if old.Connected == st.Connected {
			st.Since = old.Since
		}
		if st.URL == "" {
			st.URL = old.URL
		}
		st.LastError = old.LastError
	}
	if st.URL == "" {
		st.URL = signaling.RedactURLs(e.natsURL)
	}
	if s.Err != nil {
		st.LastError = s.Err.Error()
	}
	e.nats.Store(st)
}

// redactURL hides a password in a NATS URL.
// StartedAt is when Start succeeded (zero before).
func (e *Engine) StartedAt() time.Time {
	if t := e.startedAt.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// ErrUnresponsive: an actor did not answer Ping in time (wrapped, naming it).
var ErrUnresponsive = errors.New("did not answer")

// pingWait bounds each actor's answer to Ping.
const pingWait = 5 * time.Second

// Ping checks that the engine's actors answer their mailboxes: the engine actor, the signaling
// actor and, while this engine serves an exit, the exit actor (a protoactor Touch each, answered
// after what is queued before it). The error names the one that did not answer (ErrUnresponsive,
// or ctx's error), or that signaling or a configured exit is lost; ErrNotStarted, ErrEngineClosed.
func (e *Engine) Ping(ctx context.Context) error {
	if e.pid == nil {
		return ErrNotStarted
	}
	select {
	case <-e.closed:
		return ErrEngineClosed
	default:
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.GetEngineParts{}, untilDeadline(ctx, pingWait)))
	if err != nil {
		return pingErr("engine actor", err)
	}
	parts := res.(*actors.EngineParts)
	if parts.Signaling == nil {
		return fmt.Errorf("signaling actor: %w", ErrNoSignaling)
	}
	ask := map[string]*actor.PID{"signaling actor": parts.Signaling}
	if parts.Exit != nil {
		ask["exit actor"] = parts.Exit
	} else if parts.ExitLost {
		return fmt.Errorf("exit actor: lost and not replaced: %w", ErrNoExit)
	}
	futures := map[string]*actor.Future{}
	for name, pid := range ask {
		futures[name] = e.system.Root.RequestFuture(pid, &actor.Touch{}, untilDeadline(ctx, pingWait))
	}
	for _, name := range slices.Sorted(maps.Keys(futures)) {
		if _, err := await(ctx, futures[name]); err != nil {
			return pingErr(name, err)
		}
	}
	return nil
}

func pingErr(who string, err error) error {
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return fmt.Errorf("%s: %w", who, ErrUnresponsive)
	case errors.Is(err, actor.ErrDeadLetter):
		return fmt.Errorf("%s: stopped: %w", who, ErrUnresponsive)
	}
	return fmt.Errorf("%s: %w", who, err)
}
