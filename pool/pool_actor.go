package pool

// The pool actor places its slots on exits and keeps them there: it watches the engine's exit
// directory, chooses an exit for each slot that needs one (by its strategy, filter and cap), and
// bounds how many slots open, move or are replaced at once (max_moves; rotations also by the cap
// their request gave). It is a child of the engine actor (actors.SpawnChild); its slots are its
// children.
//
//	starting ──directory watched (exits.nats)──▶ running (placements wait for the directory's first round)
//	running: a slot needs an exit (new, its exit failed, was lost, drains, or left the filter; its
//	         WireGuard exit is down; a rotation is due or asked) ──queued──▶ place(exit) when a move
//	         is free ──slot reports──▶ done
//	running ──closePool──▶ closing: closeSlot to every slot (their tunnels drain) ──all stopped──▶ stop
//	running ──actors.ReleaseTunnels (engine shutdown)──▶ releasing: release to every slot ──all stopped──▶ stop
//
// A slot whose exit leaves the directory, drains or no longer passes the filter is moved; with no
// other exit to go to it stays where it is (a draining exit keeps it until it goes). The pool's
// WireGuard exits (wireguard.go) are eligible beside the directory's unless they are down.

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
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
	spec      engine.TunnelSpec // as configured: fixed for the pool's life (Update)
	engine    *actor.PID
	openWait  time.Duration // an OpenTunnel request to the engine actor
	switchCap time.Duration // a SwitchTunnel
	logger    *slog.Logger
	wg        map[string]*actors.WireGuardExit // the pool's WireGuard exits, by id (wireguard.go)
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
	from     string // while a placement of a slot that was up runs: the exit it was up on
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
	closers   []*actor.PID
	target    int        // the size asked for: slots below it are kept (respawned if lost), those at or above it removed
	dirPID    *actor.PID // the directory watched; a replaced one is asked again
	asking    bool       // the engine is asked for its directory
	ending    bool       // closing or releasing: nothing is placed any more
	dirErr    error      // the engine gave no directory: Open fails with it
	// WireGuard exits (wireguard.go)
	wgEntries map[string]*messages.ExitEntry // the pool's, as directory entries (capacity 1)
	wgMap     *wgMap                         // what slots' tunnels get
	down      map[string]*downExit           // down, or failed lately
	held      map[string]time.Time           // a slot moved off it: no other until then
}

type resizeWait struct {
	to           *actor.PID
	grow, shrink map[int]bool // slots still to be placed, and to stop
}

func newPool(cfg poolConfig) actor.Producer {
	return func() actor.Actor {
		p := &poolActor{cfg: cfg, behavior: actor.NewBehavior(), slots: map[int]*slotView{}, byPID: map[string]int{},
			eligible: map[string]*messages.ExitEntry{}, placedNew: map[string]int{}, announced: map[string]time.Time{},
			rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), down: map[string]*downExit{}, held: map[string]time.Time{}}
		p.setWireGuard(cfg.wg, cfg.template.WireGuard)
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
	case *actor.Stopped:
		// Answered only now that the actor is out of the process registry: a pool opened again
		// at once under the same name must not find the name taken.
		for _, c := range p.closers {
			ctx.Send(c, &closed{})
		}
		p.closers = nil
		return
	case *sweep:
		p.onSweep(ctx)
		return
	case *getDown:
		ctx.Respond(&downReply{until: p.downExits()})
		return
	}
	p.behavior.Receive(ctx)
}

func (p *poolActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.startSweep(ctx)
		if p.cfg.r.nats {
			p.watchDirectory(ctx)
		}
		p.target = p.cfg.r.size
		p.refresh(ctx) // the WireGuard exits are eligible at once
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
	case *update:
		p.reconfigure(ctx, m)
	case *closeAll:
		p.closers, p.ending = append(p.closers, ctx.Sender()), true
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
	if p.asking {
		return
	}
	p.asking = true
	{
		f := ctx.RequestFuture(p.cfg.engine, &actors.EnsureDirectory{}, p.cfg.openWait)
		actors.Reenter(ctx, f, func(res any, err error) {
			p.asking = false
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
		p.closers = append(p.closers, ctx.Sender()) // every closer hears once the pool has stopped
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
	case *update:
		ctx.Respond(&updated{err: ErrClosed})
	case *awaitPlaced:
		ctx.Respond(&placed{err: ErrClosed})
	}
}

func (p *poolActor) stopIfEmpty(ctx actor.Context) {
	if len(p.slots) > 0 {
		return
	}
	ctx.Stop(ctx.Self()) // the closers are answered in Stopped
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
	if p.expireDown(now) {
		p.refresh(ctx) // a WireGuard exit's cool-off ended: eligible again
	}
	for _, v := range p.slots {
		if v.state == messages.SlotUp && v.inflight == 0 && v.want == "" && !v.removing && p.ready() && p.eligible[v.exit] == nil {
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
