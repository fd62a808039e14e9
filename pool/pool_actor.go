package pool

// The pool actor places its slots on exits and keeps them there: it watches the engine's exit
// directory, chooses an exit for each slot that needs one (by its strategy, filter and cap), and
// bounds how many slots open, move or are replaced at once (max_moves; rotations also by the cap
// their request gave). It is a child of the engine actor (actors.SpawnChild); its slots are its
// children.
//
//	starting ──directory watched──▶ running (placements wait for the directory's first round)
//	running: a slot needs an exit (new, its exit failed, was lost, drains, or left the filter; a
//	         rotation is due or asked) ──queued──▶ place(exit) when a move is free ──slot reports──▶ done
//	running ──closePool──▶ closing: closeSlot to every slot (their tunnels drain) ──all stopped──▶ stop
//	running ──actors.ReleaseTunnels (engine shutdown)──▶ releasing: release to every slot ──all stopped──▶ stop
//
// A slot whose exit leaves the directory, drains or no longer passes the filter is moved; with no
// other exit to go to it stays where it is (a draining exit keeps it until it goes).

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

// Errors of the pool's API.
var (
	ErrClosed = errors.New("pool closed")
	ErrRange  = errors.New("beyond the pool's port range")
)

const (
	sweepEvery = time.Second      // rotations due, avoided exits expired, stuck placements retried
	avoidFor   = 10 * time.Second // an exit that failed a slot is not chosen for it again within this
)

type poolConfig struct {
	r         resolved
	template  actors.TunnelConfig
	engine    *actor.PID
	openWait  time.Duration // an OpenTunnel request to the engine actor
	switchCap time.Duration // a SwitchTunnel
	logger    *slog.Logger
}

// Requests of the API (pool.go); each is answered once.
type (
	getSlots   struct{}
	slotsReply struct{ slots []SlotInfo }
	rotate     struct {
		index int // -1: every slot
		limit int // at most this many at once (besides max_moves); 0: max_moves
	}
	rotated struct {
		moved, failed int
		err           error
	}
	resize   struct{ size int }
	resized  struct{ err error }
	closeAll struct{ drain time.Duration }
	closed   struct{}
	// awaitPlaced is answered once every slot has been placed once (up) or found no exit.
	awaitPlaced struct{}
	placed      struct{ err error }
	sweep       struct{}
)

// slotView is what the pool knows of a slot, from its reports.
type slotView struct {
	pid      *actor.PID
	index    int
	state    messages.SlotState
	exit     string // the exit it is on, or opening or moving to
	tunnel   *actor.PID
	upSince  time.Time
	rotateAt time.Time
	avoid    map[string]time.Time
	want     string // why it waits for a placement ("": it does not)
	rotation bool   // the wanted placement is a rotation
	inflight uint64 // the placement under way, 0 none
	// inflightRot: the placement under way was started as a rotation (it holds a unit of the
	// rotation limit until it ends, whatever happens to the slot meanwhile)
	inflightRot bool
	// awaited: a Rotate or RotateAll waits for this slot: answered when its next placement ends
	// (a heal that overtook the rotation counts), or when the slot goes
	awaited  bool
	moves    int
	cause    string
	removing bool
	settled  bool // placed once, or found no exit
}

type rotationWait struct {
	to            *actor.PID
	left          map[int]bool
	moved, failed int
	limit         int
}

type poolActor struct {
	cfg       poolConfig
	behavior  actor.Behavior
	dir       *messages.ExitDirectory
	eligible  map[string]*messages.ExitEntry
	placedNew map[string]int       // placements per exit since its newest announcement
	announced map[string]time.Time // the announcement placedNew counts from
	slots     map[int]*slotView
	byPID     map[string]int
	queue     []int
	inflight  int
	rotating  int // rotations in flight
	gen       uint64
	rng       *rand.Rand
	sweepT    *time.Timer // stopped in Stopping
	rotations []*rotationWait
	resizes   []*resizeWait
	placers   []*actor.PID // awaiting placed
	closer    *actor.PID
	target    int        // the size asked for: slots below it are kept (respawned if lost), those at or above it removed
	dirPID    *actor.PID // the directory watched; a replaced one is asked again
	ending    bool       // closing or releasing: nothing is placed any more
	dirErr    error      // the engine gave no directory: Open fails with it
}

type resizeWait struct {
	to           *actor.PID
	grow, shrink map[int]bool // slots still to be placed, and to stop
}

func newPool(cfg poolConfig) actor.Producer {
	return func() actor.Actor {
		p := &poolActor{cfg: cfg, behavior: actor.NewBehavior(), slots: map[int]*slotView{}, byPID: map[string]int{},
			eligible: map[string]*messages.ExitEntry{}, placedNew: map[string]int{}, announced: map[string]time.Time{},
			rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
		p.behavior.Become(p.running)
		return p
	}
}

func (p *poolActor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Stopping:
		if p.sweepT != nil {
			p.sweepT.Stop()
		}
		return
	case *sweep:
		p.onSweep(ctx)
		return
	}
	p.behavior.Receive(ctx)
}

func (p *poolActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.startSweep(ctx)
		p.watchDirectory(ctx)
		p.target = p.cfg.r.size
		p.fill(ctx)
	case *messages.ExitDirectory:
		p.directory(ctx, m)
	case *slotReport:
		p.report(ctx, m)
	case *actor.Terminated:
		if p.dirPID != nil && m.Who.Equal(p.dirPID) { // the engine replaces a lost directory: ask again
			p.dirPID, p.dir = nil, nil
			p.watchDirectory(ctx)
			return
		}
		p.slotGone(ctx, m.Who)
	case *getSlots:
		ctx.Respond(&slotsReply{slots: p.infos()})
	case *awaitPlaced:
		p.placers = append(p.placers, ctx.Sender())
		p.checkPlaced(ctx)
	case *rotate:
		p.rotate(ctx, m)
	case *resize:
		p.resize(ctx, m)
	case *closeAll:
		p.closer, p.ending = ctx.Sender(), true
		p.behavior.Become(p.closing)
		p.answerAll(ctx, ErrClosed)
		for _, v := range p.slots {
			ctx.Send(v.pid, &closeSlot{drain: m.drain})
		}
		p.stopIfEmpty(ctx)
	case *actors.ReleaseTunnels:
		p.ending = true
		p.behavior.Become(p.closing)
		p.answerAll(ctx, ErrClosed)
		for _, v := range p.slots {
			ctx.Send(v.pid, &release{})
		}
		p.stopIfEmpty(ctx)
	}
}

// watchDirectory asks the engine for its exit directory and watches it (and its PID: a lost
// directory is replaced by the engine, and asked again).
func (p *poolActor) watchDirectory(ctx actor.Context) {
	{
		f := ctx.RequestFuture(p.cfg.engine, &actors.EnsureDirectory{}, p.cfg.openWait)
		actors.Reenter(ctx, f, func(res any, err error) {
			d, _ := res.(*actors.DirectoryReady)
			if err == nil && d != nil && d.Err != nil {
				err = d.Err
			}
			if err == nil && (d == nil || d.PID == nil) {
				err = errors.New("engine has no directory")
			}
			if err != nil {
				p.cfg.logger.Error("pool has no exit directory: its slots wait", "pool", p.cfg.r.name, "err", err)
				p.dirErr = fmt.Errorf("exit directory: %w", err)
				p.checkPlaced(ctx)
				return
			}
			p.dirPID = d.PID
			ctx.Watch(d.PID)
			ctx.Send(d.PID, &actors.WatchExits{PID: ctx.Self()})
		})
	}
}

// closing waits for the slots to stop; requests are refused.
func (p *poolActor) closing(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Terminated:
		p.slotGone(ctx, m.Who)
		p.stopIfEmpty(ctx)
	case *closeAll:
		if p.closer == nil {
			p.closer = ctx.Sender()
		} else {
			ctx.Respond(&closed{})
		}
		for _, v := range p.slots {
			ctx.Send(v.pid, &closeSlot{drain: m.drain}) // again, perhaps shorter: a slot already closing ignores it
		}
	case *actors.ReleaseTunnels:
		for _, v := range p.slots {
			ctx.Send(v.pid, &release{})
		}
	case *getSlots:
		ctx.Respond(&slotsReply{slots: p.infos()})
	case *rotate:
		ctx.Respond(&rotated{err: ErrClosed})
	case *resize:
		ctx.Respond(&resized{err: ErrClosed})
	case *awaitPlaced:
		ctx.Respond(&placed{err: ErrClosed})
	}
}

func (p *poolActor) stopIfEmpty(ctx actor.Context) {
	if len(p.slots) > 0 {
		return
	}
	if p.closer != nil {
		ctx.Send(p.closer, &closed{})
		p.closer = nil
	}
	ctx.Stop(ctx.Self())
}

// answerAll answers every waiting request: the pool is closing.
func (p *poolActor) answerAll(ctx actor.Context, err error) {
	for _, w := range p.rotations {
		ctx.Send(w.to, &rotated{moved: w.moved, failed: w.failed, err: err})
	}
	for _, w := range p.resizes {
		ctx.Send(w.to, &resized{err: err})
	}
	for _, to := range p.placers {
		ctx.Send(to, &placed{err: err})
	}
	p.rotations, p.resizes, p.placers = nil, nil, nil
}

func (p *poolActor) startSweep(ctx actor.Context) {
	system, self := ctx.ActorSystem(), ctx.Self()
	p.sweepT = time.AfterFunc(sweepEvery, func() { system.Root.Send(self, &sweep{}) })
}

// onSweep queues the rotations that are due and retries placements that found no exit.
func (p *poolActor) onSweep(ctx actor.Context) {
	if p.ending {
		return
	}
	now := time.Now()
	for _, v := range p.slots {
		if v.state == messages.SlotUp && v.inflight == 0 && v.want == "" && !v.removing && p.dir != nil && p.dir.Ready && p.eligible[v.exit] == nil {
			v.want, v.rotation = p.whyIneligible(v.exit), false // it came up on an exit that left meanwhile
		}
		for e, until := range v.avoid {
			if now.After(until) {
				delete(v.avoid, e)
			}
		}
		if v.state == messages.SlotUp && v.inflight == 0 && v.want == "" && !v.rotateAt.IsZero() && !now.Before(v.rotateAt) {
			v.want, v.rotation = "rotation (max age)", true
		}
		if v.want != "" && v.inflight == 0 && !v.removing {
			p.enqueue(v)
		}
	}
	p.pump(ctx)
	p.sweepT.Reset(sweepEvery)
}

// fill spawns every slot below the target size that is missing; each asks for a placement.
func (p *poolActor) fill(ctx actor.Context) {
	for i := 0; i < p.target; i++ {
		if _, ok := p.slots[i]; !ok {
			p.spawnSlot(ctx, i)
		}
	}
	p.pump(ctx)
}

func (p *poolActor) spawnSlot(ctx actor.Context, i int) {
	sc := slotConfig{pool: p.cfg.r.name, index: i, template: p.cfg.template, engine: p.cfg.engine,
		openWait: p.cfg.openWait, switchCap: p.cfg.switchCap, logger: p.cfg.logger}
	if p.cfg.r.socks.Count > 0 {
		sc.socks = p.cfg.r.socks.AddrOf(i)
	}
	if p.cfg.r.http.Count > 0 {
		sc.http = p.cfg.r.http.AddrOf(i)
	}
	pid := ctx.Spawn(actors.NewProps(newSlot(sc)))
	ctx.Watch(pid)
	v := &slotView{pid: pid, index: i, state: messages.SlotWaiting, want: "new slot", avoid: map[string]time.Time{}}
	p.slots[i], p.byPID[pid.Id] = v, i
	p.enqueue(v)
}

func (p *poolActor) enqueue(v *slotView) {
	if !slices.Contains(p.queue, v.index) {
		p.queue = append(p.queue, v.index)
	}
}

// directory takes a new snapshot: slots on exits no longer eligible want to move.
func (p *poolActor) directory(ctx actor.Context, d *messages.ExitDirectory) {
	p.dir = d
	clear(p.eligible)
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
	for _, v := range p.slots {
		if v.removing || v.inflight != 0 || v.want != "" {
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
	if p.dir == nil || !p.dir.Ready {
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
		v.inflight, v.exit, v.inflightRot = p.gen, exit, v.rotation
		p.inflight++
		if v.inflightRot {
			p.rotating++
		}
		p.placedNew[exit]++
		ctx.Send(v.pid, &place{exit: exit, why: v.want, gen: p.gen})
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
	counts := map[string]int{}
	for _, o := range p.slots {
		if o.exit != "" && o.index != v.index {
			counts[o.exit]++
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
	if r.gen != 0 && r.gen == v.inflight { // the placement under way ended
		ok := !r.need
		v.inflight = 0
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
	if r.need && !v.removing {
		if r.avoid != "" {
			v.avoid[r.avoid] = time.Now().Add(avoidFor)
		}
		v.want, v.rotation = r.cause, false
		p.enqueue(v)
	}
	if !v.settled && (r.state == messages.SlotUp || (r.state == messages.SlotWaiting && r.need)) {
		v.settled = true
		p.checkPlaced(ctx)
	}
	p.checkResizes(ctx)
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
		in := SlotInfo{Index: v.index, State: v.state, Exit: v.exit, UpSince: v.upSince, Moves: v.moves, Cause: v.cause,
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
