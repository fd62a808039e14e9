package admin

// /v1/tunnels and /v1/connections.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// askers bounds the concurrent asks of one request (one per tunnel).
const askers = 16

// each runs f(0..n-1), at most askers at once.
func each(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(n, askers) {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// tunnelSnap is one tunnel asked for its info and counters.
type tunnelSnap struct {
	info  engine.TunnelInfo
	stats messages.ConnectionStats
	err   error
}

// snapTunnels asks every tunnel for its info (and counters, if withStats); closed ones are left out.
func snapTunnels(ctx context.Context, ts []*engine.Tunnel, withStats bool) ([]tunnelSnap, error) {
	snaps := make([]tunnelSnap, len(ts))
	each(len(ts), func(i int) {
		snaps[i].info, snaps[i].err = ts[i].Info(ctx)
		if snaps[i].err == nil && withStats {
			snaps[i].stats, snaps[i].err = ts[i].Stats(ctx)
		}
	})
	out := snaps[:0]
	for _, s := range snaps {
		switch {
		case errors.Is(s.err, engine.ErrTunnelClosed):
			continue
		case s.err != nil:
			return nil, s.err
		}
		out = append(out, s)
	}
	return out, nil
}

func (s *Server) listTunnels(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	ts, err := s.eng.Tunnels(ctx)
	if err != nil {
		return err
	}
	snaps, err := snapTunnels(ctx, ts, true)
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]Tunnel, 0, len(snaps))
	for _, sn := range snaps {
		out = append(out, tunnelView(sn.info, sn.stats, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// tunnel finds the tunnel the path names.
func (s *Server) tunnel(ctx context.Context, r *http.Request) (*engine.Tunnel, error) {
	name := r.PathValue("name")
	t, err := s.eng.Tunnel(ctx, name)
	if errors.Is(err, engine.ErrTunnelNotFound) {
		return nil, newError(CodeNotFound, "no tunnel named "+cut(name))
	}
	return t, err
}

// view asks a tunnel for its info and counters.
func view(ctx context.Context, t *engine.Tunnel) (Tunnel, error) {
	info, err := t.Info(ctx)
	if err != nil {
		return Tunnel{}, err
	}
	st, err := t.Stats(ctx)
	if err != nil {
		return Tunnel{}, err
	}
	return tunnelView(info, st, time.Now()), nil
}

func (s *Server) getTunnel(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	t, err := s.tunnel(ctx, r)
	if err != nil {
		return err
	}
	v, err := view(ctx, t)
	if errors.Is(err, engine.ErrTunnelClosed) {
		return newError(CodeNotFound, "tunnel "+cut(t.ID())+" is closed")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// createTunnel opens a tunnel as the config file's tunnels say and answers once it is Up (201),
// or failed.
func (s *Server) createTunnel(w http.ResponseWriter, r *http.Request) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	spec, err := decodeTunnelSpec(data)
	if err != nil {
		return err
	}
	if err := engine.CheckTunnelSpec(spec, "tunnel"); err != nil {
		return err
	}
	ctx, cancel, err := within(r, openTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	t, err := s.eng.OpenTunnel(ctx, spec)
	if err != nil {
		return err
	}
	v, err := view(ctx, t)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tunnels/"+url.PathEscape(t.ID()))
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// drainParam reads ?drain= (a duration ≥ 0): the close options and how long the drain may take.
func drainParam(r *http.Request, key string) ([]engine.CloseOption, time.Duration, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return nil, 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxTimeout {
		return nil, 0, badRequest("%s: %q: want a duration from 0s (no drain) to %s", key, cut(v), maxTimeout)
	}
	return []engine.CloseOption{engine.WithDrainTimeout(d)}, d, nil
}

// deleteTunnel closes a tunnel (?drain=5s: active connections may finish for 5 s; 0s: none;
// absent: its drain_timeout) and answers once it has released everything.
func (s *Server) deleteTunnel(w http.ResponseWriter, r *http.Request) error {
	opts, drain, err := drainParam(r, "drain")
	if err != nil {
		return err
	}
	def := 2 * time.Minute // as long as Tunnel.Close waits for a drain of its own drain_timeout
	if opts != nil {
		def = drain + closeTimeout
	}
	ctx, cancel, err := within(r, def)
	if err != nil {
		return err
	}
	defer cancel()
	t, err := s.tunnel(ctx, r)
	if err != nil {
		return err
	}
	err = t.Close(ctx, opts...)
	if errors.Is(err, context.DeadlineExceeded) {
		return newError(CodeTimeout, "the timeout passed during the drain: the tunnel was closed at once ("+err.Error()+")")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Tunnel{Name: t.ID(), State: string(messages.StateClosed)})
	return nil
}

// switchTunnel moves a tunnel to another exit, make-before-break, and answers once new
// connections go to the new exit.
func (s *Server) switchTunnel(w http.ResponseWriter, r *http.Request) error {
	var req SwitchRequest
	if err := decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Exit == "" {
		return badRequest("body.exit: required")
	}
	var opts []engine.CloseOption
	if req.Drain != "" {
		d, err := time.ParseDuration(req.Drain)
		if err != nil || d < 0 || d > maxTimeout {
			return badRequest("body.drain: %q: want a duration from 0s to %s", cut(req.Drain), maxTimeout)
		}
		opts = append(opts, engine.WithDrainTimeout(d))
	}
	ctx, cancel, err := within(r, switchTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	t, err := s.tunnel(ctx, r)
	if err != nil {
		return err
	}
	if err := t.Switch(ctx, req.Exit, opts...); err != nil {
		return err
	}
	return s.writeView(ctx, w, t)
}

// reconnectTunnel renews a tunnel's session with the same exit (Tunnel.Reconfigure) and answers
// once it is Up again.
func (s *Server) reconnectTunnel(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	ctx, cancel, err := within(r, switchTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	t, err := s.tunnel(ctx, r)
	if err != nil {
		return err
	}
	if err := t.Reconfigure(ctx); err != nil {
		return err
	}
	return s.writeView(ctx, w, t)
}

func (s *Server) writeView(ctx context.Context, w http.ResponseWriter, t *engine.Tunnel) error {
	v, err := view(ctx, t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// connections lists active connections: of one tunnel (?tunnel=NAME, an engine tunnel or a pool
// slot's), or of every tunnel and pool slot.
func (s *Server) connections(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	name := r.URL.Query().Get("tunnel")
	now := time.Now()
	out := []Connection{}
	add := func(tunnel string, slot *int, cs []engine.ConnInfo) {
		for _, c := range cs {
			out = append(out, Connection{Tunnel: tunnel, Slot: slot, ID: c.ID, Kind: c.Kind, Source: c.Source,
				Target: c.Target, Exit: c.Exit, Since: c.Since, AgeSeconds: seconds(now.Sub(c.Since)),
				BytesIn: c.BytesIn, BytesOut: c.BytesOut})
		}
	}
	var ts []*engine.Tunnel
	if name != "" {
		t, err := s.eng.Tunnel(ctx, name)
		switch {
		case err == nil:
			ts = []*engine.Tunnel{t}
		case !errors.Is(err, engine.ErrTunnelNotFound):
			return err
		}
	} else {
		var err error
		if ts, err = s.eng.Tunnels(ctx); err != nil {
			return err
		}
	}
	for _, t := range ts {
		cs, err := t.Connections(ctx)
		if errors.Is(err, engine.ErrTunnelClosed) && name == "" {
			continue
		}
		if err != nil {
			return err
		}
		add(t.ID(), nil, cs)
	}
	found := len(ts) > 0
	if p := s.pool(); p != nil && (name == "" || !found) {
		slots, err := p.Slots(ctx)
		if err != nil && !errors.Is(err, pool.ErrClosed) {
			return err
		}
		for _, sl := range slots {
			if sl.Tunnel.ID == "" || (name != "" && sl.Tunnel.ID != name) {
				continue
			}
			found = true
			cs, err := p.SlotConnections(ctx, sl.Index)
			if err != nil {
				return err
			}
			i := sl.Index
			add(sl.Tunnel.ID, &i, cs)
		}
	}
	if name != "" && !found {
		return newError(CodeNotFound, "no tunnel named "+cut(name))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pool is the engine's pool, if it runs one.
func (s *Server) pool() *pool.Pool {
	if s.opts.Pool == nil {
		return nil
	}
	return s.opts.Pool()
}
