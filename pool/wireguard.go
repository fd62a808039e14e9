package pool

// WireGuard exits in a pool (docs/pool.md#wireguard-exits): standard WireGuard servers — the files
// of exits.wireguard_dir and the engine's wireguard_exits named in exits.wireguard — placed beside
// the NATS directory's exits, by the same strategies, cap and rotation, with three rules of their
// own:
//
//   - One slot per WireGuard exit. A wg-quick file is one client key, which the server knows as
//     one peer at one endpoint: two tunnels under one key take each other's replies (both fail).
//     So a WireGuard exit that holds a slot, or that a slot is moving off, is not chosen for
//     another; one a slot moved off is held for the tunnel's drain timeout (its old leg drains
//     there); and a slot never rotates from a WireGuard exit to itself.
//   - Load: a WireGuard exit announces none. Its capacity is that one slot, so a free one scores
//     0 (least_loaded and spread both prefer it to an exit that holds slots).
//   - Down: when its data plane fails a slot (the tunnel goes Reconnecting for data_plane or
//     start, or a leg to it does not come up: handshake timeout, endpoint unresolved, check failed), the pool
//     holds it down for a cool-off — 30 s, doubled (60 s, 2 min, 4 min, 5 min) each time it fails
//     again without having served a slot for 30 s, back to 30 s once its last cool-off ended 5 min
//     before — and moves its slots as from an exit that left the directory.

import (
	"fmt"
	"maps"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

const (
	wgCoolOff    = 30 * time.Second // a WireGuard exit's first cool-off after its data plane failed
	wgCoolOffMax = 5 * time.Minute  // the longest; also how long a failure streak is remembered
	wgHoldExtra  = time.Second      // beyond the drain timeout, for the old leg's release
)

// wgMap is the WireGuard configurations a slot's tunnel gets (actors.TunnelConfig.WireGuard): the
// engine's with the pool's files over them. Immutable; an Update that changes them makes a new
// one, and a slot compares pointers to know whether its tunnel has the current one.
type wgMap struct {
	m map[string]*actors.WireGuardExit
}

// wireGuardExits builds, from the engine's WireGuard exits and the resolved configuration, the
// pool's own (the files of wireguard_dir, and the engine's exits named in exits.wireguard) and the
// map its tunnels get. Both are new maps: the engine's is shared and never modified. An id in
// exits.wireguard that the engine does not have is an error naming it.
func wireGuardExits(engineWG map[string]*actors.WireGuardExit, r resolved) (own, all map[string]*actors.WireGuardExit, err error) {
	own = make(map[string]*actors.WireGuardExit, len(r.wgDir)+len(r.wgNamed))
	maps.Copy(own, r.wgDir)
	for i, id := range r.wgNamed {
		w := engineWG[id]
		if w == nil {
			return nil, nil, &engine.FieldError{Field: fmt.Sprintf("pool.exits.wireguard[%d]", i),
				Err: fmt.Errorf("%w: %q is not among the engine's wireguard_exits", actors.ErrUnknownExit, id)}
		}
		own[id] = w
	}
	all = make(map[string]*actors.WireGuardExit, len(engineWG)+len(r.wgDir))
	maps.Copy(all, engineWG)
	maps.Copy(all, r.wgDir) // within the pool, a file shadows an engine exit of the same id
	return own, all, nil
}

// sameWireGuard reports whether two sets of WireGuard exits hold the same configurations.
func sameWireGuard(a, b map[string]*actors.WireGuardExit) bool {
	return maps.EqualFunc(a, b, (*actors.WireGuardExit).Equal)
}

// downExit is a WireGuard exit whose data plane failed a slot.
type downExit struct {
	until  time.Time     // not chosen before this
	next   time.Duration // the cool-off of its next failure
	active bool          // until has not passed yet (the sweep makes it eligible again)
}

// markDown holds WireGuard exit id down from now; upFor is how long the failed tunnel had been up
// on it. It returns the cool-off, 0 if the exit was down already.
func (p *poolActor) markDown(id string, upFor time.Duration, now time.Time) time.Duration {
	d := p.down[id]
	if d != nil && d.active && now.Before(d.until) {
		return 0 // one failure, reported late or twice: the cool-off runs already
	}
	if d == nil || upFor >= wgCoolOff || now.Sub(d.until) > wgCoolOffMax {
		d = &downExit{next: wgCoolOff}
		p.down[id] = d
	}
	cool := d.next
	d.until, d.next, d.active = now.Add(cool), min(2*cool, wgCoolOffMax), true
	return cool
}

func (p *poolActor) isDown(id string, now time.Time) bool {
	d := p.down[id]
	return d != nil && d.active && now.Before(d.until)
}

// expireDown ends the cool-offs that have passed (reporting whether any did), forgets streaks
// older than wgCoolOffMax and holds that have passed.
func (p *poolActor) expireDown(now time.Time) bool {
	ended := false
	for id, d := range p.down {
		if d.active && !now.Before(d.until) {
			d.active, ended = false, true
		}
		if !d.active && now.Sub(d.until) > wgCoolOffMax {
			delete(p.down, id)
		}
	}
	maps.DeleteFunc(p.held, func(_ string, until time.Time) bool { return !now.Before(until) })
	return ended
}

// eligibleWireGuard adds the pool's WireGuard exits that pass the ids filter and are not down.
func (p *poolActor) eligibleWireGuard(now time.Time) {
	for id, e := range p.wgEntries {
		if (p.cfg.r.ids == nil || p.cfg.r.ids[id]) && !p.isDown(id, now) {
			p.eligible[id] = e
		}
	}
}

// setWireGuard takes a new set of WireGuard exits (own) and the map tunnels get (all); what is
// known of exits no longer in the set is forgotten. A slot on an exit whose configuration changed
// moves, as its tunnel's session runs on the old one.
func (p *poolActor) setWireGuard(own, all map[string]*actors.WireGuardExit) {
	old := p.cfg.wg
	p.cfg.wg = own
	if p.wgMap == nil || !sameWireGuard(p.wgMap.m, all) {
		p.wgMap = &wgMap{m: all}
	}
	p.wgEntries = make(map[string]*messages.ExitEntry, len(own))
	for id, w := range own {
		p.wgEntries[id] = &messages.ExitEntry{ID: id, Endpoint: w.Endpoint, Capacity: 1, State: messages.ExitServing}
	}
	maps.DeleteFunc(p.down, func(id string, _ *downExit) bool { return own[id] == nil })
	maps.DeleteFunc(p.held, func(id string, _ time.Time) bool { return own[id] == nil })
	for _, v := range p.slots {
		was, now := old[v.exit], own[v.exit]
		if v.state == messages.SlotUp && !v.removing && v.inflight == 0 && v.want == "" && was != nil && now != nil && !was.Equal(now) {
			v.want, v.rotation = "exit "+v.exit+"'s configuration changed", false
			p.enqueue(v)
		}
	}
}

// wgBusy reports whether WireGuard exit id can take no slot but v: another slot is on it, on its
// way to it or moving off it, or one moved off it lately (its old leg may still drain there).
func (p *poolActor) wgBusy(id string, v *slotView, counts map[string]int, leaving map[string]bool, now time.Time) bool {
	return counts[id] > 0 || leaving[id] || now.Before(p.held[id]) || (id == v.exit && v.state != messages.SlotWaiting)
}

// whyWireGuard says why WireGuard exit id no longer takes the pool's slots.
func (p *poolActor) whyWireGuard(id string) string {
	switch {
	case p.cfg.wg[id] == nil:
		return "exit " + id + " is no longer among the pool's WireGuard exits"
	case p.isDown(id, time.Now()):
		return fmt.Sprintf("exit %s is down (its data plane failed): cool-off until %s", id, p.down[id].until.Format(time.TimeOnly))
	}
	return "exit " + id + " no longer passes the pool's filter"
}

// getDown asks for the WireGuard exits the pool holds down; answered with downReply.
type (
	getDown   struct{}
	downReply struct{ until map[string]time.Time }
)

func (p *poolActor) downExits() map[string]time.Time {
	out := map[string]time.Time{}
	now := time.Now()
	for id, d := range p.down {
		if d.active && now.Before(d.until) {
			out[id] = d.until
		}
	}
	return out
}
