package pool

// The pool actor's requests (Slots, Rotate, RotateAll, Resize, Open's wait) and its slots' ends.

import (
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

func (p *poolActor) slotGone(ctx actor.Context, who *actor.PID) {
	i, ok := p.byPID[who.Id]
	if !ok {
		return
	}
	delete(p.byPID, who.Id)
	v := p.slots[i]
	if v.inflight != 0 {
		p.inflight--
		if v.inflightRot {
			p.rotating--
		}
	}
	if v.awaited {
		p.rotationDone(ctx, i, false)
	}
	delete(p.slots, i)
	if i < p.target && !p.ending { // lost (it panicked), or removed and asked back by a later resize
		p.spawnSlot(ctx, i)
	}
	p.checkResizes(ctx)
	p.checkPlaced(ctx)
	p.pump(ctx)
}

func (p *poolActor) checkPlaced(ctx actor.Context) {
	if len(p.placers) == 0 {
		return
	}
	for _, v := range p.slots {
		if !v.settled && !v.removing && p.dirErr == nil {
			return
		}
	}
	for _, to := range p.placers {
		ctx.Send(to, &placed{err: p.dirErr})
	}
	p.placers = nil
}

func (p *poolActor) rotate(ctx actor.Context, m *rotate) {
	w := &rotationWait{to: ctx.Sender(), left: map[int]bool{}, limit: m.limit}
	for _, v := range p.slots {
		if (m.index >= 0 && v.index != m.index) || v.removing || v.state != messages.SlotUp || v.inflight != 0 {
			continue
		}
		v.want, v.rotation, v.awaited = "rotation (asked)", true, true
		w.left[v.index] = true
		p.enqueue(v)
	}
	if m.index >= 0 && len(w.left) == 0 {
		ctx.Respond(&rotated{err: fmt.Errorf("slot %d: %w", m.index, ErrNotUp)})
		return
	}
	if len(w.left) == 0 {
		ctx.Respond(&rotated{})
		return
	}
	p.rotations = append(p.rotations, w)
	p.pump(ctx)
}

func (p *poolActor) rotationDone(ctx actor.Context, index int, ok bool) {
	keep := p.rotations[:0]
	for _, w := range p.rotations {
		if w.left[index] {
			delete(w.left, index)
			if ok {
				w.moved++
			} else {
				w.failed++
			}
		}
		if len(w.left) == 0 {
			ctx.Send(w.to, &rotated{moved: w.moved, failed: w.failed})
			continue
		}
		keep = append(keep, w)
	}
	p.rotations = keep
}

func (p *poolActor) resize(ctx actor.Context, m *resize) {
	limit := MaxSize
	for _, r := range []PortRange{p.cfg.r.socks, p.cfg.r.http} {
		if r.Count > 0 && r.Count < limit {
			limit = r.Count
		}
	}
	if m.size < 0 || m.size > limit {
		ctx.Respond(&resized{err: fmt.Errorf("size %d: %w (%d ports)", m.size, ErrRange, limit)})
		return
	}
	p.target = m.size
	w := &resizeWait{to: ctx.Sender(), grow: map[int]bool{}, shrink: map[int]bool{}}
	for i, v := range p.slots {
		if i >= p.target && !v.removing {
			v.removing, v.want = true, ""
			ctx.Send(v.pid, &closeSlot{})
		}
		if i >= p.target {
			w.shrink[i] = true
		}
	}
	for i := 0; i < p.target; i++ {
		if v := p.slots[i]; v == nil || v.removing || !v.settled {
			w.grow[i] = true // placed once it exists, is kept, and has been placed (or found no exit)
		}
	}
	p.resizes = append(p.resizes, w)
	p.fill(ctx)
	p.checkResizes(ctx)
}

// checkResizes answers a resize once the slots it keeps are placed (or found no exit) and the
// slots it removes have stopped.
func (p *poolActor) checkResizes(ctx actor.Context) {
	keep := p.resizes[:0]
	for _, w := range p.resizes {
		for i := range w.shrink {
			if p.slots[i] == nil || i < p.target { // gone, or asked back by a later resize
				delete(w.shrink, i)
			}
		}
		for i := range w.grow {
			if v := p.slots[i]; i >= p.target || (v != nil && !v.removing && v.settled) {
				delete(w.grow, i)
			}
		}
		if len(w.grow) == 0 && len(w.shrink) == 0 {
			ctx.Send(w.to, &resized{})
			continue
		}
		keep = append(keep, w)
	}
	p.resizes = keep
}

func (p *poolActor) infos() []SlotInfo {
	out := make([]SlotInfo, 0, len(p.slots))
	for _, v := range p.slots {
		exit := v.exit
		if v.state == messages.SlotUp && v.inflight != 0 && v.from != "" {
			exit = v.from // told to move, it has not said so yet: still up where it was
		}
		in := SlotInfo{Index: v.index, State: v.state, Exit: exit, UpSince: v.upSince, Moves: v.moves, Cause: v.cause,
			RotateAt: v.rotateAt, tunnel: v.tunnel}
		if p.cfg.r.socks.Count > 0 {
			in.SOCKSAddr = p.cfg.r.socks.AddrOf(v.index)
		}
		if p.cfg.r.http.Count > 0 {
			in.HTTPAddr = p.cfg.r.http.AddrOf(v.index)
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b SlotInfo) int { return a.Index - b.Index })
	return out
}
