package engine

// What an operator surface (admin API, metrics, health checks) reads of a running engine: its
// counters, its NATS connection's state, when it started, and whether its actors answer.

import (
	"maps"
	"slices"
	"sync"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
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
