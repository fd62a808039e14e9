package pool

// Changing a running pool's settings in place (Pool.Update): what new placements and rotations
// follow. The port ranges, the name and the tunnels' settings are fixed for a pool's life.

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// ErrFixed: Update was asked to change a setting that is fixed for the pool's life (its name, its
// port ranges, its tunnels' settings); close the pool and open a new one (engine run: restart).
var ErrFixed = errors.New("fixed for the pool's life")

// update carries a checked configuration to the pool actor; answered with updated.
type (
	update struct {
		r       resolved
		spec    engine.TunnelSpec
		wg, all map[string]*actors.WireGuardExit // as wireGuardExits built them
	}
	updated struct {
		changed []string // besides the size
		target  int      // the size the pool has now
		err     error
	}
)

// Update applies cfg to the running pool and returns the names of the settings it changed
// (pool.exits, pool.max_moves, pool.max_per_exit, pool.rotate, pool.size, pool.strategy): the
// strategy, cap and filter apply to the placements that follow, and a slot whose exit no longer
// passes the filter moves (make-before-break) as when its exit leaves the directory. Update reads
// exits.wireguard_dir again (and the engine's wireguard_exits), changed or not: a file added is an
// exit from then on, a slot on a file removed or changed moves ("pool.exits" if any did); a new rotation
// age reschedules every slot's next rotation from when it came up on its exit; a new size resizes
// as Resize does, and Update returns once that is done. An invalid cfg, or one that changes a
// setting fixed for the pool's life (name, socks_ports, http_ports, tunnel: an *engine.FieldError
// wrapping ErrFixed), changes nothing.
func (p *Pool) Update(ctx context.Context, cfg Config) ([]string, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	wg, all, err := wireGuardExits(p.eng.WireGuardExits(), r)
	if err != nil {
		return nil, err
	}
	res, err := p.ask(ctx, &update{r: r, spec: cfg.Tunnel, wg: wg, all: all}, requestWait)
	if err != nil {
		return nil, err
	}
	u := res.(*updated)
	if u.err != nil {
		return nil, u.err
	}
	changed := u.changed
	if r.size != u.target {
		if err := p.Resize(ctx, r.size); err != nil {
			return changed, &engine.FieldError{Field: "pool.size", Err: err}
		}
		changed = append(changed, "pool.size")
	}
	slices.Sort(changed)
	return changed, nil
}

// reconfigure takes a new configuration, unless it changes what is fixed: eligibility is judged
// again against the directory, and rotations are rescheduled. The size is left to resize.
func (p *poolActor) reconfigure(ctx actor.Context, m *update) {
	old, r := p.cfg.r, m.r
	var err error
	switch {
	case r.name != old.name:
		err = fieldErr("pool.name", "%w: %q to %q", ErrFixed, old.name, r.name)
	case r.socks != old.socks:
		err = fieldErr("pool.socks_ports", "%w: %s to %s", ErrFixed, old.socks, r.socks)
	case r.http != old.http:
		err = fieldErr("pool.http_ports", "%w: %s to %s", ErrFixed, old.http, r.http)
	case !reflect.DeepEqual(m.spec, p.cfg.spec):
		err = fieldErr("pool.tunnel", "%w: the slots' tunnel settings", ErrFixed)
	}
	if err != nil {
		ctx.Respond(&updated{err: err})
		return
	}
	var changed []string
	for _, c := range []struct {
		field string
		diff  bool
	}{
		{"pool.strategy", r.strategy != old.strategy},
		{"pool.max_per_exit", r.maxPerExit != old.maxPerExit},
		{"pool.max_moves", r.maxMoves != old.maxMoves},
		{"pool.exits", !maps.Equal(r.labels, old.labels) || !maps.Equal(r.ids, old.ids) || r.nats != old.nats ||
			!sameWireGuard(m.wg, p.cfg.wg)},
		{"pool.rotate", r.maxAge != old.maxAge || r.jitter != old.jitter},
	} {
		if c.diff {
			changed = append(changed, c.field)
		}
	}
	r.size = old.size
	p.cfg.r = r
	p.setWireGuard(m.wg, m.all)    // the tunnels' map may change with the engine's alone: nothing to report
	if r.nats && p.dirPID == nil { // it did not use the directory: it does now
		p.watchDirectory(ctx)
	}
	if len(changed) > 0 {
		p.cfg.logger.Info("pool settings changed", "changed", changed)
	}
	// The caller appends to and sorts what it gets: its own copy.
	ctx.Respond(&updated{changed: slices.Clone(changed), target: p.target})
	if len(changed) == 0 {
		return
	}
	for _, v := range p.slots {
		if v.state == messages.SlotUp && !v.removing {
			p.scheduleRotation(v)
		}
	}
	p.refresh(ctx) // slots on exits that no longer pass the filter want to move
	p.onSweep(ctx) // rotations now due
}
