package admin

// The engine API the admin server reads beyond Stats and the tunnels' own methods (issue 14): the
// engine's tunnels by name, connections, exit sessions, counters, NATS status, start time and
// liveness, adapted to what the handlers and the collector use.

import (
	"context"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/pool"
	"github.com/warren-tunnel/warren/signaling"
)

var (
	errTunnelNotFound = engine.ErrTunnelNotFound
	errTunnelExists   = engine.ErrTunnelExists
)

// engineTunnels lists the engine's own tunnels (not pool slots), sorted by name.
func (s *Server) engineTunnels(ctx context.Context) ([]*engine.Tunnel, error) {
	return s.eng.Tunnels(ctx)
}

// engineTunnel finds one of the engine's tunnels by name (errTunnelNotFound).
func (s *Server) engineTunnel(ctx context.Context, name string) (*engine.Tunnel, error) {
	return s.eng.Tunnel(ctx, name)
}

// openTunnel opens a tunnel and returns once it is Up (or failed); a name in use is errTunnelExists.
func (s *Server) openTunnel(ctx context.Context, spec engine.TunnelSpec) (*engine.Tunnel, error) {
	return s.eng.OpenTunnel(ctx, spec)
}

// tunnelExtra are the TunnelInfo fields the views show beyond the basic ones.
type tunnelExtra struct {
	OpenedAt, LastHandshake time.Time
	Cause                   string
	Exits                   []string
}

func extraOf(info engine.TunnelInfo) tunnelExtra {
	return tunnelExtra{OpenedAt: info.OpenedAt, LastHandshake: info.LastHandshake, Cause: info.Cause, Exits: info.Exits}
}

// connInfo is an active connection.
type connInfo = engine.ConnInfo

func tunnelConnections(ctx context.Context, t *engine.Tunnel) ([]connInfo, error) {
	return t.Connections(ctx)
}

func slotConnections(ctx context.Context, p *pool.Pool, slot int) ([]connInfo, error) {
	return p.SlotConnections(ctx, slot)
}

// exitSession is one session of this engine's exit.
type exitSession = engine.ExitSession

func exitSessions(ctx context.Context, e *engine.Engine) ([]exitSession, error) {
	return e.ExitSessions(ctx)
}

// histogram is engine.Histogram: upper bounds in seconds, per-bucket (not cumulative) counts with
// a last +Inf bucket.
type histogram = engine.Histogram

// counters are the engine's monotonic counters for metrics.
type counters struct {
	ok           bool
	Transitions  map[[2]string]uint64 // [from, to]
	Reconnects   map[string]uint64    // by cause class
	SignalingRTT histogram
}

func engineCounters(e *engine.Engine) counters {
	c := e.Counters()
	out := counters{ok: true, Transitions: map[[2]string]uint64{}, Reconnects: c.Reconnects, SignalingRTT: c.SignalingRTT}
	for k, n := range c.Transitions {
		out.Transitions[[2]string{string(k.From), string(k.To)}] = n
	}
	return out
}

// natsStatus is the engine's NATS connection.
func natsStatus(e *engine.Engine) NATSStatus {
	n := e.NATSStatus()
	if n.URL == signaling.InProcessURL {
		n.URL = "in-process"
	}
	return NATSStatus{Connected: n.Connected, URL: n.URL, LastError: n.LastError, Since: n.Since}
}

// startedAt is when the engine started.
func (s *Server) startedAt() time.Time {
	if t := s.eng.StartedAt(); !t.IsZero() {
		return t
	}
	return s.created
}

// ping asks the engine's actors to answer (/healthz).
func ping(ctx context.Context, e *engine.Engine) error {
	return e.Ping(ctx)
}
