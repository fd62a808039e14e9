package pool

// The pool actor's placements: which slots want an exit, which exit each gets (the strategy over
// the eligible exits: the directory's and the pool's WireGuard exits), and what the slots report
// back.

import (
	"maps"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

func (p *poolActor) enqueue(v *slotView) {
	if !slices.Contains(p.queue, v.index) {
		p.queue = append(p.queue, v.index)
	}
}

// directory takes a new snapshot of the NATS exit directory.
func (p *poolActor) directory(ctx actor.Context, d *messages.ExitDirectory) {
	p.dir = d
	p.refresh(ctx)
}

// ready: placements may start — the directory has finished its first round, or the pool does not
// use it.
func (p *poolActor) ready() bool { return !p.cfg.r.nats || (p.dir != nil && p.dir.Ready) }

// refresh judges every exit's eligibility again (a directory snapshot, a WireGuard exit down or
// back, an Update): slots on exits no longer eligible want to move.
func (p *poolActor) refresh(ctx actor.Context) {
	clear(p.eligible)
	if d := p.dir; d != nil && p.cfg.r.nats {
		listed := map[string]bool{}
		for _, e := range d.Exits {
			listed[e.ID] = true
		}
		maps.DeleteFunc(p.placedNew, func(id string, _ int) bool { return !listed[id] })
		maps.DeleteFunc(p.announced, func(id string, _ time.Time) bool { return !listed[id] })
		for _, e := range d.Exits {
			if p.passes(e) {
				p.eligible[e.ID] = e
				if !e.Announced.Equal(p.announced[e.ID]) {
					p.announced[e.ID], p.placedNew[e.ID] = e.Announced, 0
				}
			}
		}
	}
	p.eligibleWireGuard(time.Now())
	for _, v := range p.slots {
		if v.removing || v.inflight != 0 || v.want != "" || !p.ready() { // before the directory's first round nothing is judged
			continue
		}
		if v.state == messages.SlotUp && p.eligible[v.exit] == nil {
			v.want, v.rotation = p.whyIneligible(v.exit), false
			v.avoid[v.exit] = time.Now().Add(avoidFor)
			p.enqueue(v)
		}
	}
	for _, v := range p.slots {
		if v.want != "" && v.inflight == 0 && !v.removing {
			p.enqueue(v)
		}
	}
	p.pump(ctx)
}

func (p *poolActor) whyIneligible(exit string) string {
	if actors.IsWireGuardExit(exit) {
		return p.whyWireGuard(exit)
	}
	if !p.cfg.r.nats {
		return "exit " + exit + ": the pool no longer uses the NATS directory's exits"
	}
	if p.dir != nil {
		for _, e := range p.dir.Exits {
			if e.ID == exit {
				if !e.Serving() {
					return "exit " + exit + " drains"
				}
				return "exit " + exit + " no longer passes the pool's filter"
			}
		}
	}
	return "exit " + exit + " left the directory"
}

// passes reports whether an exit may take the pool's slots: serving, and through the filter.
func (p *poolActor) passes(e *messages.ExitEntry) bool {
	if !e.Serving() {
		return false
	}
	if p.cfg.r.ids != nil && !p.cfg.r.ids[e.ID] {
		return false
	}
	for k, v := range p.cfg.r.labels {
		if e.Labels[k] != v {
			return false
		}
	}
	return true
}

// pump starts queued placements while moves are free.
func (p *poolActor) pump(ctx actor.Context) {
	if !p.ready() {
		return
	}
	rest := p.queue[:0]
	for _, i := range p.queue {
		v := p.slots[i]
		if v == nil || v.want == "" || v.inflight != 0 || v.removing {
			continue
		}
		if p.inflight >= p.cfg.r.maxMoves || (v.rotation && p.rotating >= p.rotationLimit()) {
			rest = append(rest, i)
			continue
		}
		exit := p.pick(v)
		if exit == "" {
			p.noExit(ctx, v)
			continue // retried on the next directory change or sweep
		}
		p.gen++
		v.from = ""
		if v.state == messages.SlotUp {
			v.from = v.exit
		}
		v.inflight, v.exit, v.inflightRot = p.gen, exit, v.rotation
		p.inflight++
		if v.inflightRot {
			p.rotating++
		}
		if !actors.IsWireGuardExit(exit) {
			p.placedNew[exit]++
		}
		ctx.Send(v.pid, &place{exit: exit, why: v.want, gen: p.gen, wg: p.wgMap})
	}
	p.queue = rest
}

// noExit: nothing to place v on. A new or failed slot has been placed as far as it can be; a
// rotation asked for ends as failed; a slot that is up stays where it is.
func (p *poolActor) noExit(ctx actor.Context, v *slotView) {
	if v.state == messages.SlotUp {
		if v.rotation { // nowhere else to go: it stays, and rotates again at its next age
			v.want, v.rotation = "", false
			p.scheduleRotation(v)
		}
		if v.awaited {
			v.awaited = false
			p.rotationDone(ctx, v.index, false)
		}
	}
	if !v.settled && v.state == messages.SlotWaiting {
		v.settled = true
		p.checkPlaced(ctx)
	}
}

func (p *poolActor) rotationLimit() int {
	limit := p.cfg.r.maxMoves
	for _, w := range p.rotations {
		if w.limit > 0 && w.limit < limit {
			limit = w.limit
		}
	}
	return limit
}

// pick chooses an exit for v by the pool's strategy.
func (p *poolActor) pick(v *slotView) string {
	counts, leaving := map[string]int{}, map[string]bool{}
	for _, o := range p.slots {
		if o.exit != "" && o.index != v.index {
			counts[o.exit]++
		}
		if o.from != "" && o.inflight != 0 && o.index != v.index {
			leaving[o.from] = true
		}
	}
	var cands []placement
	now := time.Now()
	for id, e := range p.eligible {
		if until, ok := v.avoid[id]; ok && now.Before(until) {
			continue
		}
		if id == v.exit && !v.rotation && v.state != messages.SlotWaiting {
			continue // it wants to leave this exit
		}
		if p.cfg.r.maxPerExit > 0 && counts[id] >= p.cfg.r.maxPerExit {
			continue
		}
		if actors.IsWireGuardExit(id) {
			if p.wgBusy(id, v, counts, leaving, now) {
				continue // one key, one tunnel
			}
			cands = append(cands, placement{exit: e}) // free: load 0 of its capacity of 1
			continue
		}
		cands = append(cands, placement{exit: e, count: counts[id], placed: p.placedNew[id]})
	}
	if v.rotation && len(cands) > 1 { // a rotation goes elsewhere when it can
		cands = slices.DeleteFunc(cands, func(c placement) bool { return c.exit.ID == v.exit })
	}
	slices.SortFunc(cands, func(a, b placement) int { return compareIDs(a.exit.ID, b.exit.ID) })
	return choose(p.cfg.r.strategy, cands, p.rng)
}

func compareIDs(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// report takes a slot's transition.
func (p *poolActor) report(ctx actor.Context, r *slotReport) {
	v := p.slots[r.index]
	if v == nil {
		return
	}
	wasSettled := v.settled
	v.state, v.tunnel, v.cause = r.state, r.tunnel, r.cause
	switch r.state {
	case messages.SlotWaiting:
		v.exit = ""
	case messages.SlotClosing:
	default:
		v.exit = r.exit
	}
	now := time.Now()
	if r.gen != 0 && r.gen == v.inflight { // the placement under way ended
		ok := !r.need
		if ok && v.from != "" && v.from != v.exit && actors.IsWireGuardExit(v.from) {
			p.held[v.from] = now.Add(p.cfg.template.DrainTimeout + wgHoldExtra) // its old leg drains there
		}
		v.inflight, v.from = 0, ""
		p.inflight--
		if v.inflightRot {
			p.rotating--
			v.inflightRot = false
		}
		if v.awaited {
			v.awaited = false
			p.rotationDone(ctx, v.index, ok)
		}
		v.rotation = false
		if ok {
			v.want = ""
			if wasSettled {
				v.moves++
			}
		}
	}
	if r.state == messages.SlotUp && !r.upSince.Equal(v.upSince) {
		v.upSince = r.upSince
		p.scheduleRotation(v)
	}
	down := false
	if r.need && !v.removing {
		if r.avoid != "" {
			v.avoid[r.avoid] = now.Add(avoidFor)
		}
		v.want, v.rotation = r.cause, false
		p.enqueue(v)
	}
	if r.need && r.exitFailed && p.cfg.wg[r.avoid] != nil {
		if cool := p.markDown(r.avoid, r.upFor, now); cool > 0 {
			p.cfg.logger.Warn("WireGuard exit down: its slots move", "exit", r.avoid, "cool_off", cool, "cause", r.cause)
			down = true
		}
	}
	if !v.settled && (r.state == messages.SlotUp || (r.state == messages.SlotWaiting && r.need)) {
		v.settled = true
		p.checkPlaced(ctx)
	}
	p.checkResizes(ctx)
	if down {
		p.refresh(ctx) // no longer eligible: the slots on it move (refresh pumps)
		return
	}
	p.pump(ctx)
}

// scheduleRotation draws v's next rotation time: max_age ± jitter after it came up on its exit.
func (p *poolActor) scheduleRotation(v *slotView) {
	if p.cfg.r.maxAge <= 0 || v.upSince.IsZero() {
		v.rotateAt = time.Time{}
		return
	}
	f := 1 + p.cfg.r.jitter*(2*p.rng.Float64()-1)
	v.rotateAt = v.upSince.Add(time.Duration(float64(p.cfg.r.maxAge) * f))
	if v.rotateAt.Before(time.Now()) {
		v.rotateAt = time.Now().Add(time.Duration(float64(p.cfg.r.maxAge) * f))
	}
}
