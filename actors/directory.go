package actors

// The exit directory: one per client engine, the engine's view of the live exits on the bus
// (docs/pool.md). The engine actor spawns it on the first EnsureDirectory; it owns its entries,
// its watchers, and three timers (the discovery window, the sweep, the load coalescing).
// Announcements reach it through the signaling actor, decoded and validated; here each is verified
// (signature by its identity, clock) and its identity checked against the engine's trust for its
// exit id before it changes anything (directory_entries.go).
//
//	Started: watch announcements and NATS state (signaling); discoverExits (round 1)
//	discovering ──discoverWindow──▶ endDiscovery ──discoveryEnded (or signaling lost)──▶ ready
//	   GetExits wait                                  waiting GetExits answered; watchers told Ready
//	ready ──NATS connected again──▶ another round (ready stays; its answers are announcements)
//	either state: a verified, trusted announcement newer than its exit's entry replaces it
//	              (leaving: the entry goes); the sweep drops exits silent for 3 of their intervals
//	Stopping: timers stopped; unwatch announcements (ends a round) and NATS; waiting GetExits
//	          answered (Ready false)
//
// Watchers hear a *messages.ExitDirectory at once, after every membership or state change at once,
// and after load-only changes at most once per directoryLoadEvery. They are watched and forgotten
// when they stop. If the directory is lost, the engine replaces it (at most 3 times a minute, not
// without signaling); its watchers, who watch it, ask EnsureDirectory again and watch the new one.

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// EnsureDirectory asks the engine actor for its exit directory, spawned on the first ask; the reply
// is *DirectoryReady.
type EnsureDirectory struct{}

// DirectoryReady answers EnsureDirectory.
type DirectoryReady struct {
	PID *actor.PID
	Err error // ErrNoSignaling, ErrNoDirectory, or ErrShuttingDown
}

// WatchExits subscribes PID to the directory: it hears *messages.ExitDirectory at once and after
// every change (an exit joins, leaves or changes state: at once; load only: at most once per
// directoryLoadEvery). UnwatchExits ends it; a watcher that stops is forgotten (it is watched).
// Snapshots are shared between watchers: read only.
type WatchExits struct{ PID *actor.PID }

// UnwatchExits ends a WatchExits.
type UnwatchExits struct{ PID *actor.PID }

// GetExits asks the directory for its content; the reply is *messages.ExitDirectory, sent once the
// first discovery round has finished.
type GetExits struct{}

// Errors of EnsureDirectory.
var (
	ErrShuttingDown = errors.New("engine shutting down")
	ErrNoDirectory  = errors.New("engine's exit directory was lost too often: restart the engine")
)

// DirectoryConfig configures the directory.
type DirectoryConfig struct {
	Signaling *actor.PID // set by the engine actor
	// Trust decides which identity may announce an exit id: the engine's operators and any_exit
	// (pins are per tunnel), and any exit on a private bus.
	Trust  signaling.ExitTrust
	Stats  *SignalingStats // the Announcements* counters; nil: not kept
	Logger *slog.Logger
}

// maxDirectoryExits bounds the exits listed (and the marks of exits that left): an announcement of a
// further exit is dropped and counted (SignalingStats.Dropped).
const maxDirectoryExits = 8192

type directory struct {
	cfg       DirectoryConfig
	warnedAt  time.Time // the last dropped announcement logged at warn (warnDrop)
	unlogged  int       // dropped announcements not logged since
	behavior  actor.Behavior
	signaling *actor.PID // nil once lost
	// queued counts announcements signaling handed to this mailbox and not yet taken: flow control
	// between the two actors (watchAnnouncements), not lifecycle state.
	queued      *atomic.Int64
	entries     map[string]*messages.ExitEntry
	gone        map[string]int64 // exit id → the newest timestamp (Unix ms) of an exit dropped lately
	watchers    map[string]*actor.PID
	waiting     []*actor.PID // GetExits before Ready
	ready       bool
	round       int  // the discovery round last started
	rounding    bool // a round is open
	natsUp      bool
	windowT     *time.Timer // discoverWindowEnded of the open round
	sweepT      *time.Timer
	sweepEvery  time.Duration // of the armed sweep
	loadT       *time.Timer   // directoryLoadDue, while a load-only change waits
	loadDirty   bool
	lastPublish time.Time
}

// NewDirectoryProps returns the props of the exit directory.
func NewDirectoryProps(cfg DirectoryConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("actor", "directory")
	if cfg.Stats == nil {
		cfg.Stats = &SignalingStats{}
	}
	return props(func() actor.Actor {
		d := &directory{cfg: cfg, behavior: actor.NewBehavior(), signaling: cfg.Signaling, queued: &atomic.Int64{},
			entries: map[string]*messages.ExitEntry{}, gone: map[string]int64{}, watchers: map[string]*actor.PID{}}
		d.behavior.Become(d.discovering)
		return d
	})
}

func (d *directory) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.started(ctx)
	case *messages.ExitAnnouncement:
		d.queued.Add(-1)
		d.announced(ctx, m, time.Now())
	case *WatchExits:
		d.watch(ctx, m.PID)
	case *UnwatchExits:
		if m.PID != nil && d.watchers[m.PID.Id] != nil {
			delete(d.watchers, m.PID.Id)
			ctx.Unwatch(m.PID)
		}
	case *actor.Terminated:
		d.terminated(ctx, m.Who)
	case *NATSState, *discoverWindowEnded, *discoveryEnded:
		d.rounds(ctx)
	case *directorySweep:
		d.sweepT = nil
		d.sweep(ctx, time.Now())
	case *directoryLoadDue:
		d.loadT = nil
		if d.loadDirty {
			d.publish(ctx)
		}
	case *actor.Stopping:
		d.stopping(ctx)
	default:
		d.behavior.Receive(ctx)
	}
}

func (d *directory) started(ctx actor.Context) {
	if d.signaling == nil {
		d.becomeReady(ctx)
		return
	}
	ctx.Watch(d.signaling)
	ctx.Send(d.signaling, &watchAnnouncements{pid: ctx.Self(), queued: d.queued})
	ctx.Send(d.signaling, &watchNATS{pid: ctx.Self()})
	d.natsUp = true // the first NATSState is the current one: no new round for it
	d.discover(ctx)
}

func (d *directory) watch(ctx actor.Context, pid *actor.PID) {
	if pid == nil {
		return
	}
	if d.watchers[pid.Id] == nil {
		d.watchers[pid.Id] = pid
		ctx.Watch(pid)
	}
	ctx.Send(pid, d.snapshot(time.Now()))
}

// terminated: signaling, or a watcher, stopped.
func (d *directory) terminated(ctx actor.Context, who *actor.PID) {
	if d.signaling == nil || !who.Equal(d.signaling) {
		delete(d.watchers, who.Id)
		return
	}
	// Nothing more will come: the entries expire as their exits fall silent.
	d.signaling = nil
	d.cfg.Logger.Warn("signaling lost: the directory hears no more announcements")
	if d.rounding {
		d.roundEnded(ctx, &discoveryEnded{round: d.round, err: ErrNoSignaling})
	}
}

func (d *directory) stopping(ctx actor.Context) {
	stopTimers(d.windowT, d.sweepT, d.loadT)
	if d.signaling != nil {
		ctx.Send(d.signaling, &unwatchAnnouncements{pid: ctx.Self()})
		ctx.Send(d.signaling, &unwatchNATS{pid: ctx.Self()})
	}
	snap := d.snapshot(time.Now())
	for _, pid := range d.waiting {
		ctx.Send(pid, snap)
	}
	d.waiting = nil
}

// discovering: the first round is open; GetExits waits for its end.
func (d *directory) discovering(ctx actor.Context) {
	if _, ok := ctx.Message().(*GetExits); ok && ctx.Sender() != nil {
		d.waiting = append(d.waiting, ctx.Sender())
	}
}

func (d *directory) readyState(ctx actor.Context) {
	if _, ok := ctx.Message().(*GetExits); ok {
		ctx.Respond(d.snapshot(time.Now()))
	}
}

// rounds takes the messages of discovery rounds: NATS back after a disconnect (a new round), the
// window's end (end the round with signaling), and signaling's word that the round has ended.
func (d *directory) rounds(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *NATSState:
		if m.Connected && !d.natsUp && !d.rounding && d.signaling != nil {
			d.discover(ctx) // back after a disconnect: ask again rather than wait a cadence
		}
		d.natsUp = m.Connected
	case *discoverWindowEnded:
		if d.rounding && m.round == d.round {
			d.windowT = nil
			ctx.Request(d.signaling, &endDiscovery{round: m.round})
		}
	case *discoveryEnded:
		if d.rounding && m.round == d.round {
			d.roundEnded(ctx, m)
		}
	}
}

// discover opens a round: signaling asks every exit, and hands their answers on for discoverWindow.
func (d *directory) discover(ctx actor.Context) {
	d.round++
	d.rounding = true
	ctx.Request(d.signaling, &discoverExits{round: d.round})
	rearm(&d.windowT, ctx, discoverWindow, &discoverWindowEnded{round: d.round})
}

func (d *directory) roundEnded(ctx actor.Context, m *discoveryEnded) {
	d.rounding = false
	stopTimers(d.windowT)
	d.windowT = nil
	if m.err != nil {
		d.cfg.Logger.Warn("exit discovery round failed", "round", m.round, "err", m.err)
	} else {
		d.cfg.Logger.Debug("exit discovery round ended", "round", m.round, "answers", m.answers, "exits", len(d.entries))
	}
	if !d.ready {
		d.becomeReady(ctx)
	}
}

func (d *directory) becomeReady(ctx actor.Context) {
	d.ready = true
	d.behavior.Become(d.readyState)
	snap := d.snapshot(time.Now())
	for _, pid := range d.waiting {
		ctx.Send(pid, snap)
	}
	d.waiting = nil
	d.publish(ctx)
}
