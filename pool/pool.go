// Package pool runs many tunnels, each behind its own fixed local proxy ports, spread over the exits
// of the engine's directory, rotated on a schedule and moved make-before-break when their exit dies,
// leaves or drains (docs/pool.md).
package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/future"
	"github.com/warren-tunnel/warren/messages"
)

// ErrNotUp: a slot to rotate is not up (it is waiting, opening or moving).
var ErrNotUp = errors.New("slot not up")

// ErrNoSlot: the pool has no slot of that index.
var ErrNoSlot = errors.New("no such slot")

// SlotInfo describes a slot at one moment.
type SlotInfo struct {
	Index     int
	State     messages.SlotState
	Exit      string // the exit its tunnel is on (or opening or moving to); "" while it waits
	SOCKSAddr string // its fixed proxy addresses ("" if the pool has no such range)
	HTTPAddr  string
	UpSince   time.Time // since its tunnel came up on its current exit
	RotateAt  time.Time // its next scheduled rotation (zero: none)
	Moves     int       // times it moved to another exit (rotations, heals, replacements)
	Cause     string    // what its last transition said
	// Tunnel describes its current tunnel (zero while it has none): its id, state, session and
	// reconnections.
	Tunnel messages.TunnelInfo
	// Stats are its current tunnel's connection counters (a replaced tunnel's are gone with it).
	Stats messages.ConnectionStats

	tunnel *actor.PID
}

// Age is how long the slot has been on its current exit.
func (s SlotInfo) Age() time.Duration {
	if s.UpSince.IsZero() {
		return 0
	}
	return time.Since(s.UpSince)
}

// Pool is a running pool. Its methods are safe for concurrent use.
type Pool struct {
	system *actor.ActorSystem
	pid    *actor.PID
	engine *actor.PID // the engine actor, the pool actor's parent
	eng    *engine.Engine
	cfg    resolved
}

// requestWait bounds requests that the pool answers at once; tunnelWait a slot's tunnel's answer to
// Slots (one that is releasing its device may take a moment: its stats are then left out).
const (
	requestWait = 10 * time.Second
	tunnelWait  = 2 * time.Second
)

// Open starts a pool on a started engine and returns once every slot has been placed once (its
// tunnel is up) or has found no exit to go to (it waits for one). Its proxies listen on their
// fixed ports from then on, for the pool's whole life. ctx bounds the wait, not the pool.
func Open(ctx context.Context, eng *engine.Engine, cfg Config) (*Pool, error) {
	if eng == nil {
		return nil, errors.New("pool: nil engine")
	}
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	system, enginePID, err := eng.Runtime()
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	if r.nats && !eng.DirectoryTrustsExits() {
		return nil, fmt.Errorf("pool: %w", engine.ErrNoTrustedExits)
	}
	spec := cfg.Tunnel
	spec.Exit, spec.SOCKS = "pool", "127.0.0.1:0" // placeholders: each slot sets its own
	tmpl, err := eng.TunnelConfig(spec)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	wg, all, err := wireGuardExits(eng.WireGuardExits(), r)
	if err != nil {
		return nil, err
	}
	tmpl.SOCKSAddr, tmpl.HTTPAddr, tmpl.ExitID, tmpl.WireGuard = "", "", "", all
	pc := poolConfig{r: r, template: tmpl, spec: cfg.Tunnel, engine: enginePID, openWait: 30 * time.Second,
		switchCap: 2*tmpl.HandshakeTimeout + 5*time.Second, logger: eng.Logger().With("pool", r.name), wg: wg}
	res, err := system.Root.RequestFuture(enginePID, &actors.SpawnChild{Props: actors.NewProps(newPool(pc)), Name: "pool-" + r.name}, requestWait).Result()
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	sp := res.(*actors.ChildSpawned)
	if sp.Err != nil {
		if errors.Is(sp.Err, actors.ErrShuttingDown) {
			return nil, engine.ErrEngineClosed
		}
		return nil, fmt.Errorf("pool: %w", sp.Err)
	}
	p := &Pool{system: system, pid: sp.PID, engine: enginePID, eng: eng, cfg: r}
	res, err = p.ask(ctx, &awaitPlaced{}, time.Hour)
	if err == nil {
		err = res.(*placed).err
	}
	if err != nil {
		_ = p.Close(context.Background(), -1)
		return nil, fmt.Errorf("pool: %w", err)
	}
	return p, nil
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.cfg.name }

// SOCKSPorts and HTTPPorts are the pool's port ranges.
func (p *Pool) SOCKSPorts() PortRange { return p.cfg.socks }

// HTTPPorts is the pool's HTTP port range (Count 0: none).
func (p *Pool) HTTPPorts() PortRange { return p.cfg.http }

func (p *Pool) ask(ctx context.Context, msg any, limit time.Duration) (any, error) {
	res, err := future.Await(ctx, p.system.Root.RequestFuture(p.pid, msg, min(limit, future.UntilDeadline(ctx, limit))))
	if errors.Is(err, actor.ErrDeadLetter) {
		return nil, ErrClosed
	}
	return res, err
}

// Slots describes every slot, with its tunnel's connection counters, ordered by index.
func (p *Pool) Slots(ctx context.Context) ([]SlotInfo, error) {
	res, err := p.ask(ctx, &getSlots{}, requestWait)
	if err != nil {
		return nil, err
	}
	slots := res.(*slotsReply).slots
	stats, infos := make([]*actor.Future, len(slots)), make([]*actor.Future, len(slots))
	for i, s := range slots {
		if s.tunnel != nil {
			stats[i] = p.system.Root.RequestFuture(s.tunnel, &messages.GetStats{}, tunnelWait)
			infos[i] = p.system.Root.RequestFuture(s.tunnel, &messages.GetTunnelInfo{}, tunnelWait)
		}
	}
	for i := range slots {
		if stats[i] == nil {
			continue
		}
		if r, err := stats[i].Result(); err == nil {
			if st, ok := r.(*messages.StatsResponse); ok {
				slots[i].Stats = st.Stats
			}
		}
		if r, err := infos[i].Result(); err == nil {
			if in, ok := r.(*messages.TunnelInfoResponse); ok {
				slots[i].Tunnel = in.Info
			}
		}
	}
	return slots, nil
}

// SlotConnections describes the active proxied connections of slot i's current tunnel, sorted by
// ID (none while the slot has no tunnel, or its tunnel closes as it is asked). ErrNoSlot if the pool
// has no slot i.
func (p *Pool) SlotConnections(ctx context.Context, i int) ([]engine.ConnInfo, error) {
	res, err := p.ask(ctx, &getSlots{}, requestWait)
	if err != nil {
		return nil, err
	}
	for _, s := range res.(*slotsReply).slots {
		if s.Index != i {
			continue
		}
		if s.tunnel == nil {
			return []engine.ConnInfo{}, nil
		}
		r, err := future.Await(ctx, p.system.Root.RequestFuture(s.tunnel, &messages.GetConnections{}, min(tunnelWait, future.UntilDeadline(ctx, tunnelWait))))
		if errors.Is(err, actor.ErrDeadLetter) {
			return []engine.ConnInfo{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		return r.(*messages.ConnectionsResponse).Conns, nil
	}
	return nil, fmt.Errorf("slot %d: %w", i, ErrNoSlot)
}

// Rotate moves slot i to another exit (by the strategy; the same exit, with a fresh session, if it
// is the only one), make-before-break, and returns once it has moved. Connections in flight finish
// on the old exit within the drain timeout.
func (p *Pool) Rotate(ctx context.Context, i int) error {
	res, err := p.ask(ctx, &rotate{index: i}, time.Hour)
	if err != nil {
		return err
	}
	r := res.(*rotated)
	if r.err != nil {
		return r.err
	}
	if r.failed > 0 {
		return fmt.Errorf("slot %d: no exit to rotate to, or the move failed (it stays where it was)", i)
	}
	return nil
}

// RotateAll rotates every slot that is up, at most concurrency at once (0: max_moves), and returns
// how many moved and how many could not (they stay where they were).
func (p *Pool) RotateAll(ctx context.Context, concurrency int) (moved, failed int, err error) {
	res, err := p.ask(ctx, &rotate{index: -1, limit: concurrency}, time.Hour)
	if err != nil {
		return 0, 0, err
	}
	r := res.(*rotated)
	return r.moved, r.failed, r.err
}

// DownExits lists the WireGuard exits the pool holds down (their data plane failed a slot), each
// with the end of its cool-off: none of its slots is placed on them until then.
func (p *Pool) DownExits(ctx context.Context) (map[string]time.Time, error) {
	res, err := p.ask(ctx, &getDown{}, requestWait)
	if err != nil {
		return nil, err
	}
	return res.(*downReply).until, nil
}

// Resize grows the pool (new slots are placed before it returns) or shrinks it (the slots with the
// highest indices drain and close before it returns). The size may not exceed the port ranges.
func (p *Pool) Resize(ctx context.Context, size int) error {
	res, err := p.ask(ctx, &resize{size: size}, time.Hour)
	if err != nil {
		return err
	}
	return res.(*resized).err
}

// Close drains every slot's tunnel (drain; 0: the tunnel's drain_timeout, negative: none) and
// closes it, then stops the pool; the engine goes on. If ctx ends first, the rest close at once.
// Closing a closed pool is a no-op.
func (p *Pool) Close(ctx context.Context, drain time.Duration) error {
	_, err := p.ask(ctx, &closeAll{drain: drain}, time.Hour)
	if err != nil && !errors.Is(err, ErrClosed) {
		_, _ = p.ask(context.Background(), &closeAll{drain: -1}, requestWait)
		return fmt.Errorf("close pool %s: %w", p.cfg.name, err)
	}
	// Returned once the engine has seen the pool actor terminate: a pool opened again at once
	// under the same name is then a new child, not one the old one's Terminated could unlist.
	_, _ = future.Await(ctx, p.system.Root.RequestFuture(p.engine, &actors.AwaitChildGone{PID: p.pid}, requestWait))
	return nil
}
