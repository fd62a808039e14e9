package admin

// /v1/status, /v1/exits, /v1/pool, /v1/exit, /v1/reload, /healthz and /readyz.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	st, err := s.collectStatus(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) collectStatus(ctx context.Context) (Status, error) {
	now := time.Now()
	started := s.startedAt()
	st := Status{Version: s.opts.Version, StartedAt: started, UptimeSeconds: seconds(now.Sub(started)),
		ClientID: s.eng.ClientID(), NATS: natsStatus(s.eng)}
	stats, err := s.eng.Stats(ctx)
	if err != nil {
		return st, err
	}
	st.Conns = ConnectionsNow{Client: stats.Client.Active, Exit: stats.Exit.Active}
	ts, err := s.eng.Tunnels(ctx)
	if err != nil {
		return st, err
	}
	snaps, err := snapTunnels(ctx, ts, false)
	if err != nil {
		return st, err
	}
	infos := make([]engine.TunnelInfo, len(snaps))
	for i, sn := range snaps {
		infos[i] = sn.info
	}
	st.Tunnels = tunnelCounts(infos)
	client := len(infos) > 0
	if p := s.pool(); p != nil {
		client = true
		if slots, err := p.Slots(ctx); err == nil {
			st.Pool = &PoolSummary{Name: p.Name(), Slots: slotCounts(slots)}
		} else if !errors.Is(err, pool.ErrClosed) {
			return st, err
		}
	}
	st.Role = "client"
	if x, ok := s.eng.Exit(); ok {
		es, err := s.eng.ExitStatus(ctx)
		if err != nil {
			return st, err
		}
		st.Exit = exitState(x, es)
		st.Role = "exit"
		if client {
			st.Role = "exit+client"
		}
	}
	for name, n := range map[string]int64{"actor_panics": s.eng.ActorPanics(), "children_lost": s.eng.ChildrenLost(),
		"events_dropped": s.eng.DroppedEvents()} {
		if n > 0 {
			if st.Problems == nil {
				st.Problems = map[string]int64{}
			}
			st.Problems[name] = n
		}
	}
	return st, nil
}

func (s *Server) exits(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	es, err := s.eng.Exits(ctx)
	if err != nil {
		return err
	}
	out := make([]Exit, 0, len(es))
	for _, e := range es {
		out = append(out, exitView(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// thePool is the engine's pool, or errNoPool.
func (s *Server) thePool() (*pool.Pool, error) {
	if p := s.pool(); p != nil {
		return p, nil
	}
	return nil, errNoPool
}

func (s *Server) writePool(ctx context.Context, w http.ResponseWriter, p *pool.Pool) error {
	slots, err := p.Slots(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, poolView(p, slots, time.Now()))
	return nil
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) error {
	p, err := s.thePool()
	if err != nil {
		return err
	}
	ctx, cancel := reading(r)
	defer cancel()
	return s.writePool(ctx, w, p)
}

// resizePool grows or shrinks the pool and answers once new slots are placed, removed ones closed.
func (s *Server) resizePool(w http.ResponseWriter, r *http.Request) error {
	var req ResizeRequest
	if err := decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Size == nil {
		return badRequest("body.size: required")
	}
	if *req.Size < 0 || *req.Size > pool.MaxSize {
		return badRequest("body.size: %d: want 0 to %d", *req.Size, pool.MaxSize)
	}
	p, err := s.thePool()
	if err != nil {
		return err
	}
	ctx, cancel, err := within(r, poolTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	if err := p.Resize(ctx, *req.Size); err != nil {
		if errors.Is(err, pool.ErrRange) {
			return badRequest("body.size: %v", err)
		}
		return err
	}
	return s.writePool(ctx, w, p)
}

// rotatePool rotates the slots asked for (every slot that is up, with none) and answers once they
// have moved or failed to.
func (s *Server) rotatePool(w http.ResponseWriter, r *http.Request) error {
	var req RotateRequest
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	p, err := s.thePool()
	if err != nil {
		return err
	}
	ctx, cancel, err := within(r, poolTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	if len(req.Slots) == 0 {
		moved, failed, err := p.RotateAll(ctx, 0)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, RotateResult{Moved: moved, Failed: failed})
		return nil
	}
	slots, err := p.Slots(ctx)
	if err != nil {
		return err
	}
	seen := map[int]bool{}
	for i, n := range req.Slots {
		if n < 0 || n >= len(slots) {
			return badRequest("body.slots[%d]: %d: the pool has slots 0 to %d", i, n, len(slots)-1)
		}
		if seen[n] {
			return badRequest("body.slots[%d]: slot %d listed twice", i, n)
		}
		seen[n] = true
	}
	var res RotateResult
	var mu sync.Mutex
	each(len(req.Slots), func(i int) {
		err := p.Rotate(ctx, req.Slots[i])
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			res.Moved++
			return
		}
		res.Failed++
		e := classify(err)
		res.Errors = append(res.Errors, SlotFailure{Slot: req.Slots[i], Code: e.Code, Message: e.Message})
	})
	slices.SortFunc(res.Errors, func(a, b SlotFailure) int { return a.Slot - b.Slot })
	writeJSON(w, http.StatusOK, res)
	return nil
}

// theExit is this engine's exit and its status, or errNoExit.
func (s *Server) theExit(ctx context.Context) (*ExitState, error) {
	x, ok := s.eng.Exit()
	if !ok {
		return nil, errNoExit
	}
	st, err := s.eng.ExitStatus(ctx)
	if err != nil {
		return nil, err
	}
	return exitState(x, st), nil
}

func (s *Server) exitSessions(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	x, err := s.theExit(ctx)
	if err != nil {
		return err
	}
	sessions, err := s.eng.ExitSessions(ctx)
	if err != nil {
		return err
	}
	out := ExitSessions{Exit: *x, Sessions: make([]ExitSession, 0, len(sessions))}
	for _, se := range sessions {
		out.Sessions = append(out.Sessions, ExitSession{ID: se.ID, ClientID: se.ClientID, Addresses: addrStrings(se.Addresses),
			Since: se.Since, LastActive: se.LastActive, Flows: se.Flows})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// drainExit drains this engine's exit (Engine.DrainExit) and answers once it has stopped.
func (s *Server) drainExit(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	ctx, cancel, err := within(r, drainTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	if _, ok := s.eng.Exit(); !ok {
		return errNoExit
	}
	if err := s.eng.DrainExit(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return newError(CodeTimeout, "the timeout passed; the exit goes on draining ("+err.Error()+")")
		}
		return err
	}
	x, err := s.theExit(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, x)
	return nil
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	if s.opts.Reload == nil {
		return newError(CodeNotImplemented, "this process cannot reload its configuration")
	}
	ctx, cancel, err := within(r, reloadTimeout)
	if err != nil {
		return err
	}
	defer cancel()
	res, err := s.opts.Reload(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// writeHealth answers a health check: 200 when OK, 503 with the problems otherwise.
func writeHealth(w http.ResponseWriter, problems []string) {
	if len(problems) == 0 {
		writeJSON(w, http.StatusOK, Health{OK: true})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, Health{Problems: problems})
}

// healthz: the engine's actors answer within 2 s.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), healthzTimeout)
	defer cancel()
	var problems []string
	if err := s.eng.Ping(ctx); err != nil {
		problems = append(problems, "engine: "+err.Error())
	}
	writeHealth(w, problems)
	return nil
}

// readyz: every configured tunnel carries traffic, the pool has its ready fraction of slots up,
// the exit serves.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	writeHealth(w, s.readiness(ctx))
	return nil
}

// readiness lists what keeps the engine from being ready (none: ready).
func (s *Server) readiness(ctx context.Context) []string {
	if err := s.eng.Ping(ctx); err != nil {
		return []string{"engine: " + err.Error()}
	}
	var problems []string
	var names []string
	if s.opts.Configured != nil {
		names = s.opts.Configured()
	} else {
		ts, err := s.eng.Tunnels(ctx)
		if err != nil {
			return []string{"tunnels: " + err.Error()}
		}
		for _, t := range ts {
			names = append(names, t.ID())
		}
	}
	states := make([]string, len(names))
	each(len(names), func(i int) {
		t, err := s.eng.Tunnel(ctx, names[i])
		if err != nil {
			states[i] = fmt.Sprintf("tunnel %s: not open", names[i])
			return
		}
		info, err := t.Info(ctx)
		switch {
		case err != nil:
			states[i] = fmt.Sprintf("tunnel %s: %v", names[i], err)
		case !info.State.Serving():
			states[i] = fmt.Sprintf("tunnel %s: %s", names[i], info.State)
			if c := info.Cause; c != "" {
				states[i] += " (" + c + ")"
			}
		}
	})
	for _, p := range states {
		if p != "" {
			problems = append(problems, p)
		}
	}
	if p := s.pool(); p != nil {
		slots, err := p.Slots(ctx)
		if err != nil {
			problems = append(problems, fmt.Sprintf("pool %s: %v", p.Name(), err))
		} else {
			up := 0
			for _, sl := range slots {
				if sl.State == messages.SlotUp || sl.State == messages.SlotMoving {
					up++
				}
			}
			need := int(math.Ceil(s.cfg.ReadyFraction*float64(len(slots)) - 1e-9))
			if up < need {
				problems = append(problems, fmt.Sprintf("pool %s: %d of %d slots up, %d needed (ready_fraction %g)",
					p.Name(), up, len(slots), need, s.cfg.ReadyFraction))
			}
		}
	}
	if x, ok := s.eng.Exit(); ok {
		st, err := s.eng.ExitStatus(ctx)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("exit %s: %v", x.ID, err))
		case st.Draining:
			problems = append(problems, fmt.Sprintf("exit %s: draining", x.ID))
		case st.AddressesTotal == 0:
			problems = append(problems, fmt.Sprintf("exit %s: not serving (drained)", x.ID))
		case !natsStatus(s.eng).Connected:
			problems = append(problems, fmt.Sprintf("exit %s: NATS not connected: no new sessions", x.ID))
		}
	}
	return problems
}
