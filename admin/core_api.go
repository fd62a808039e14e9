package admin

// Engine API of issue 14 that this package needs and that the engine of this tree does not have
// yet (the CORE stream adds it). Every use of it goes through this file; each TODO(core) says what
// to switch on once it has landed. Until then:
//   - the tunnels the API lists are the ones opened through POST /v1/tunnels (a small registry
//     here), not the engine's configured ones;
//   - connections, exit sessions, transitions, reconnect causes, signaling RTT and handshake ages
//     are not available (501 not_implemented for the endpoints, no series for the metrics);
//   - NATS status, start time and the liveness ask are approximated from what the engine has.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/pool"
)

// errNotYet: the engine of this build lacks what the call needs (501 not_implemented).
// TODO(core): delete once every function below uses the engine.
var errNotYet = errors.New("needs engine support not in this build")

// TODO(core): errTunnelNotFound = engine.ErrTunnelNotFound, errTunnelExists = engine.ErrTunnelExists.
var (
	errTunnelNotFound = errors.New("no such tunnel")
	errTunnelExists   = errors.New("tunnel name in use")
)

// tunnelSet is the registry of tunnels opened through the API.
// TODO(core): delete (Engine.Tunnels and Engine.Tunnel know the engine's tunnels).
type tunnelSet struct {
	mu sync.Mutex
	m  map[string]*engine.Tunnel // nil value: name reserved while it opens
}

func (s *tunnelSet) reserve(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[name]; ok {
		return false
	}
	if s.m == nil {
		s.m = map[string]*engine.Tunnel{}
	}
	s.m[name] = nil
	return true
}

func (s *tunnelSet) set(name string, t *engine.Tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t == nil {
		delete(s.m, name)
		return
	}
	if s.m == nil {
		s.m = map[string]*engine.Tunnel{}
	}
	s.m[name] = t
}

func (s *tunnelSet) get(name string) *engine.Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name]
}

func (s *tunnelSet) all() []*engine.Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*engine.Tunnel
	for _, t := range s.m {
		if t != nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *engine.Tunnel) int { return strings.Compare(a.ID(), b.ID()) })
	return out
}

// engineTunnels lists the engine's own tunnels (not pool slots), sorted by name.
func (s *Server) engineTunnels(ctx context.Context) ([]*engine.Tunnel, error) {
	// TODO(core): return s.eng.Tunnels(ctx)
	var out []*engine.Tunnel
	for _, t := range s.tunnels.all() {
		if _, err := t.Info(ctx); errors.Is(err, engine.ErrTunnelClosed) {
			s.tunnels.set(t.ID(), nil) // closed by someone else
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// engineTunnel finds one of the engine's tunnels by name (errTunnelNotFound).
func (s *Server) engineTunnel(_ context.Context, name string) (*engine.Tunnel, error) {
	// TODO(core): return s.eng.Tunnel(ctx, name)
	if t := s.tunnels.get(name); t != nil {
		return t, nil
	}
	return nil, errTunnelNotFound
}

// openTunnel opens a tunnel and returns once it is Up (or failed).
func (s *Server) openTunnel(ctx context.Context, spec engine.TunnelSpec) (*engine.Tunnel, error) {
	// TODO(core): return s.eng.OpenTunnel(ctx, spec) (it refuses a name in use with ErrTunnelExists)
	if spec.Name != "" {
		if !s.tunnels.reserve(spec.Name) {
			return nil, fmt.Errorf("tunnel %s: %w", spec.Name, errTunnelExists)
		}
	}
	t, err := s.eng.OpenTunnel(ctx, spec)
	if err != nil {
		if spec.Name != "" {
			s.tunnels.set(spec.Name, nil)
		}
		return nil, err
	}
	s.tunnels.set(t.ID(), t)
	return t, nil
}

// tunnelClosed forgets a tunnel the API closed. TODO(core): delete.
func (s *Server) tunnelClosed(name string) { s.tunnels.set(name, nil) }

// tunnelExtra are TunnelInfo fields the engine of this build does not have.
type tunnelExtra struct {
	OpenedAt, LastHandshake time.Time
	Cause                   string
	Exits                   []string
}

func extraOf(_ engine.TunnelInfo) tunnelExtra {
	// TODO(core): return tunnelExtra{OpenedAt: info.OpenedAt, LastHandshake: info.LastHandshake, Cause: info.Cause, Exits: info.Exits}
	return tunnelExtra{}
}

// connInfo is an active connection. TODO(core): type connInfo = engine.ConnInfo.
type connInfo struct {
	ID                uint64
	Kind              string
	Source, Target    string
	Since             time.Time
	BytesIn, BytesOut int64
	Exit              string
}

func tunnelConnections(_ context.Context, _ *engine.Tunnel) ([]connInfo, error) {
	// TODO(core): return t.Connections(ctx)
	return nil, errNotYet
}

func slotConnections(_ context.Context, _ *pool.Pool, _ int) ([]connInfo, error) {
	// TODO(core): return p.SlotConnections(ctx, slot)
	return nil, errNotYet
}

// exitSession is one session of this engine's exit. TODO(core): type exitSession = engine.ExitSession.
type exitSession struct {
	ID, ClientID      string
	Addresses         []netip.Addr
	Since, LastActive time.Time
	Flows             int
}

func exitSessions(_ context.Context, _ *engine.Engine) ([]exitSession, error) {
	// TODO(core): return e.ExitSessions(ctx)
	return nil, errNotYet
}

// histogram is engine.Histogram: upper bounds in seconds, per-bucket (not cumulative) counts with
// a last +Inf bucket.
type histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
	Count  uint64
}

// counters are the engine's monotonic counters for metrics (engine.Counters); ok is false while
// the engine does not keep them.
type counters struct {
	ok           bool
	Transitions  map[[2]string]uint64 // [from, to]
	Reconnects   map[string]uint64    // by cause class
	SignalingRTT histogram
}

func engineCounters(_ *engine.Engine) counters {
	// TODO(core):
	//	c := e.Counters()
	//	out := counters{ok: true, Transitions: map[[2]string]uint64{}, Reconnects: c.Reconnects,
	//		SignalingRTT: histogram(c.SignalingRTT)}
	//	for k, n := range c.Transitions {
	//		out.Transitions[[2]string{string(k.From), string(k.To)}] = n
	//	}
	//	return out
	return counters{}
}

// natsStatus is the engine's NATS connection.
func natsStatus(e *engine.Engine) NATSStatus {
	// TODO(core): n := e.NATSStatus(); return NATSStatus{Connected: n.Connected, URL: n.URL, LastError: n.LastError, Since: n.Since}
	u := e.NATSConnectedURL()
	if u == "" {
		return NATSStatus{URL: e.NATSURL()}
	}
	return NATSStatus{Connected: true, URL: u}
}

// startedAt is when the engine started (or, while the engine does not say, when the server was made).
func (s *Server) startedAt() time.Time {
	// TODO(core): return s.eng.StartedAt()
	return s.created
}

// ping asks the engine's actors to answer (/healthz).
func ping(ctx context.Context, e *engine.Engine) error {
	// TODO(core): return e.Ping(ctx)
	_, err := e.Stats(ctx)
	return err
}
