package actors

// The engine actor is the root supervisor: it spawns the signaling actor, the exit (if any) and the
// tunnels, hands their events to the embedding program, and shuts them down in order.
//
//	running ──Shutdown──▶ shuttingDown: ReleaseTunnels to layered children (pools), CloseTunnel to
//	   │          every tunnel, drainExit to the exit (both drain at once) ──all tunnels terminated──▶
//	   │          exit directory stopped ──terminated──▶ health hub stopped ──terminated──▶
//	   │          the exit's drain over (it ends itself) ──terminated──▶ signaling poisoned
//	   │          ──terminated──▶ ShutdownResponse
//	   │          (Shutdown{Force} meanwhile: CloseTunnel again, with no drain, to the tunnels left;
//	   │          endWith(engine_shutdown) to the exit, which cuts its drain short)
//	   ├──DrainExit──▶ drainExit to the exit; it drains and stops: answered then, not replaced
//	   ├──exit lost──▶ a fresh exit (at most 3 respawns a minute, then given up)
//	   ├──signaling lost──▶ not replaced (OpenTunnel answers ErrNoSignaling)
//	   ├──health hub lost──▶ a fresh hub, every tunnel registers its current leg with it (at most 3
//	   │                      respawns a minute, none without signaling)
//	   ├──EnsureDirectory──▶ the exit directory, spawned at the first (none without signaling); if
//	   │                      lost, a fresh one (at most 3 respawns a minute, none without signaling)
//	   └──Stopping (Engine.Kill)──▶ killed: its children stop with it, none counted as lost
//
// Tunnels and the exit drain together: downloads in flight through this process's own exit
// finish, other engines' tunnels move to other exits while their flows here go on, and the exit
// ends once nothing is left to drain (or at its drain timeout), saying goodbye to its remaining
// clients; signaling goes last because everything before it may still publish. The engine stops
// none of them from outside: tunnels are closed with CloseTunnel (a forced shutdown closes them
// again, with no drain), the exit drains and ends itself with endWith(engine_shutdown) (a forced
// shutdown sends it that), signaling is poisoned; each tells its own children why, and the engine
// moves on at each Terminated. An exit that stops after a drain is not lost: it is not replaced.

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// EngineConfig configures the engine actor.
type EngineConfig struct {
	Signaling SignalingConfig
	Exit      *ExitConfig // nil: no exit role
	Sink      func(any)   // receives every event; called from the engine actor only, must not block
	Logger    *slog.Logger

	// Directory configures the exit directory, spawned on the first EnsureDirectory.
	Directory DirectoryConfig

	// ClientBytes and ExitBytes count the bytes of the tunnels' connections and of the exit's
	// flows as they move (nil: the engine actor makes its own); GetEngineStats reports them.
	ClientBytes, ExitBytes *ByteTotals
}

// StartEngine starts the exit (if configured); the reply is *EngineStarted once it serves.
type StartEngine struct{}

// EngineStarted answers StartEngine.
type EngineStarted struct {
	Signaling *actor.PID
	Exit      *ExitReady // nil without an exit
	Err       error
}

// OpenTunnel spawns a tunnel; the reply is *TunnelSpawned at once, and Config.ReplyTo later hears
// *messages.OpenTunnelResponse. Named marks one of the engine's own tunnels (engine.OpenTunnel,
// StartTunnel; not a pool's): its Config.ID must be unique among them (else ErrTunnelExists), and
// GetTunnels lists it until it is Closed.
type OpenTunnel struct {
	Config TunnelConfig
	Named  bool
}

// TunnelSpawned answers OpenTunnel: the tunnel's PID, or why none was spawned.
type TunnelSpawned struct {
	PID *actor.PID
	Err error
}

// ErrNoSignaling: the engine lost its signaling actor and can negotiate nothing any more.
var ErrNoSignaling = errors.New("engine has no signaling (lost): restart it")

// Shutdown stops everything in order; the reply is *ShutdownResponse when all has stopped. Force
// skips what is left of the tunnels' drains.
type Shutdown struct{ Force bool }

// ShutdownResponse answers Shutdown.
type ShutdownResponse struct{}

type engineActor struct {
	cfg       EngineConfig
	behavior  actor.Behavior
	signaling *actor.PID
	hub       *actor.PID // the health hub; replaced if lost, stopped after the tunnels
	dir       *actor.PID // the exit directory, from the first EnsureDirectory; replaced if lost, stopped after the tunnels
	exit      *actor.PID
	tunnels   map[string]*actor.PID
	named     namedTunnels                         // the engine's own tunnels (OpenTunnel.Named), by name (engine_reads.go)
	layered   map[string]*actor.PID                // children started with SpawnChild, by PID id; stopped first in shutdown
	goneWait  map[string][]*actor.PID              // AwaitChildGone callers, by the PID id of the child they wait for
	starter   *actor.PID                           // waiting for EngineStarted
	stopper   *actor.PID                           // waiting for ShutdownResponse
	stats     map[string]*messages.ConnectionStats // by role: "client", "exit"
	// exitRespawns, hubRespawns: when the exit or the health hub was replaced after stopping
	// unexpectedly, within exitRespawnWindow
	exitRespawns, hubRespawns []time.Time
	exitServing               bool         // the exit said it serves (ExitReady without Err): only then is its stop a loss
	exitTold                  bool         // shutting down: the exit was told endWith
	exitDrain                 bool         // the exit was told to drain: its stop is its end, not a loss
	exitDrained               bool         // the exit drained and stopped
	drainers                  []*actor.PID // DrainExit callers, answered once the exit has stopped

	// dirRespawns: when the exit directory was replaced after stopping unexpectedly, within
	// exitRespawnWindow; dirGivenUp: it was lost too often and is not replaced again.
	dirRespawns []time.Time
	dirGivenUp  bool
}

// An exit (or health hub) lost more than exitRespawnLimit times within exitRespawnWindow (timers.go) is not
// replaced again.
const exitRespawnLimit = 3

// NewEngineProps returns the props of the engine actor.
func NewEngineProps(cfg EngineConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger)
	if cfg.Signaling.Stats == nil { // one set of counters for signaling and the directory
		cfg.Signaling.Stats = &SignalingStats{}
	}
	if cfg.ClientBytes == nil {
		cfg.ClientBytes = &ByteTotals{}
	}
	if cfg.ExitBytes == nil {
		cfg.ExitBytes = &ByteTotals{}
	}
	// A root actor is supervised by its guardian; the default one would restart the engine.
	return props(func() actor.Actor {
		e := &engineActor{cfg: cfg, behavior: actor.NewBehavior(), tunnels: map[string]*actor.PID{}, layered: map[string]*actor.PID{},
			stats: map[string]*messages.ConnectionStats{}, named: newNamedTunnels()}
		e.behavior.Become(e.running)
		return e
	}).Configure(actor.WithGuardian(stopOnFailure))
}

func (e *engineActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *ExitReady:
		e.exitServing = m.Err == nil
		if e.starter != nil {
			ctx.Send(e.starter, &EngineStarted{Signaling: e.signaling, Exit: m, Err: m.Err})
			e.starter = nil
		} else if m.Err != nil {
			e.cfg.Logger.Error("respawned exit failed to start", "err", m.Err)
		}
		return
	case *messages.ConnectionOpened, *messages.ConnectionEnded:
		e.countConnection(m)
		return
	case *GetExitStatus:
		if e.exit == nil {
			ctx.Respond(&ExitStatus{})
			return
		}
		ctx.Forward(e.exit)
		return
	case *GetExitSessions:
		if e.exit == nil {
			ctx.Respond(&ExitSessions{Err: ErrNoExit})
			return
		}
		ctx.Forward(e.exit)
		return
	case *GetEngineStats:
		ctx.Respond(e.engineStats())
		return
	case *GetTunnels:
		ctx.Respond(e.named.list(m.Name))
		return
	case *GetEngineParts:
		ctx.Respond(e.parts())
		return
	case *messages.TunnelStateChanged:
		if m.To == messages.StateClosed { // its name is free from now on (its closers hear of it after this)
			e.named.forget(m.TunnelID, ctx.Sender())
		}
		if e.cfg.Sink != nil {
			e.cfg.Sink(m)
		}
		return
	case *actor.Terminated, *actor.Started, *actor.Stopping, *actor.Stopped:
	default:
		if e.cfg.Sink != nil && isEvent(m) {
			e.cfg.Sink(m)
			return
		}
	}
	e.behavior.Receive(ctx)
}

func (e *engineActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		e.signaling = ctx.Spawn(NewSignalingProps(e.cfg.Signaling))
		ctx.Watch(e.signaling)
		e.spawnHub(ctx)
	case *actor.Stopping:
		// Stopped from outside (Engine.Kill) without a Shutdown: its children stop with it, and
		// none of them is lost.
		e.behavior.Become(e.killed)
	case *StartEngine:
		if e.cfg.Exit == nil {
			ctx.Respond(&EngineStarted{Signaling: e.signaling})
			return
		}
		e.starter = ctx.Sender()
		e.spawnExit(ctx)
	case *OpenTunnel:
		if e.signaling == nil {
			ctx.Respond(&TunnelSpawned{Err: ErrNoSignaling})
			return
		}
		tc := m.Config
		if m.Named && e.named.taken(tc.ID) {
			ctx.Respond(&TunnelSpawned{Err: fmt.Errorf("%w: %s", ErrTunnelExists, tc.ID)})
			return
		}
		tc.Signaling, tc.Hub, tc.Events, tc.Bytes = e.signaling, e.hub, ctx.Self(), e.cfg.ClientBytes
		if tc.Logger == nil {
			tc.Logger = e.cfg.Logger
		}
		pid := ctx.Spawn(NewTunnelProps(tc))
		ctx.Watch(pid)
		e.tunnels[pid.Id] = pid
		if m.Named {
			e.named.add(tc.ID, pid)
		}
		ctx.Respond(&TunnelSpawned{PID: pid})
	case *SpawnChild:
		e.spawnChild(ctx, m)
	case *AwaitChildGone:
		e.awaitChildGone(ctx, m)
	case *EnsureDirectory:
		ctx.Respond(e.ensureDirectory(ctx))
	case *DrainExit:
		e.drainExit(ctx)
	case *actor.Terminated:
		delete(e.tunnels, m.Who.Id)
		e.named.terminated(m.Who)
		if e.childGone(ctx, m.Who) { // closed by its owner, or stopped by its supervisor (ActorPanicked says so)
			return
		}
		switch {
		case e.exit != nil && m.Who.Equal(e.exit) && e.exitDrain:
			e.exitEnded(ctx)
		case e.exit != nil && m.Who.Equal(e.exit):
			if !e.exitServing {
				e.exit = nil // it failed to start and said so (ExitReady with Err): nothing to replace
				return
			}
			e.exitLost(ctx)
		case e.hub != nil && m.Who.Equal(e.hub):
			e.hubLost(ctx)
		case e.dir != nil && m.Who.Equal(e.dir):
			e.directoryLost(ctx)
		case e.signaling != nil && m.Who.Equal(e.signaling):
			e.signaling = nil
			// Signaling owns the NATS connection and the embedded server, released as it stopped:
			// nothing can replace it in this engine. Tunnels keep their data planes (and go Degraded).
			action := "not replaced: tunnels keep their data planes but cannot negotiate; restart the engine"
			e.cfg.Logger.Error("signaling stopped unexpectedly", "action", action)
			e.lost(ctx, "signaling", action)
		}
	case *Shutdown:
		e.stopper = ctx.Sender()
		e.behavior.Become(e.shuttingDown)
		for _, pid := range e.layered {
			ctx.Send(pid, &ReleaseTunnels{}) // a pool stops steering; its tunnels drain with the others
		}
		for _, pid := range e.tunnels {
			// Each tunnel drains (its proxies refuse new connections, active ones may finish within
			// its drain timeout), says goodbye, and stops; Terminated moves shutdown on.
			ctx.Send(pid, &messages.CloseTunnel{Reason: "engine shutdown", Why: messages.EndEngineShutdown})
		}
		if e.exit != nil && !e.exitDrain { // it drains beside the tunnels, and ends itself
			e.exitDrain = true
			ctx.Send(e.exit, &drainExit{})
		}
		e.advance(ctx)
	}
}

func (e *engineActor) shuttingDown(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *AwaitChildGone:
		e.awaitChildGone(ctx, m)
	case *actor.Terminated:
		delete(e.tunnels, m.Who.Id)
		e.named.terminated(m.Who)
		e.childGone(ctx, m.Who)
		switch {
		case e.exit != nil && m.Who.Equal(e.exit):
			e.exitEnded(ctx)
		case e.hub != nil && m.Who.Equal(e.hub):
			e.hub = nil
		case e.dir != nil && m.Who.Equal(e.dir):
			e.dir = nil
		case e.signaling != nil && m.Who.Equal(e.signaling):
			e.signaling = nil
		}
		e.advance(ctx)
	case *OpenTunnel:
		ctx.Respond(&TunnelSpawned{Err: ErrShuttingDown})
	case *SpawnChild:
		ctx.Respond(&ChildSpawned{Err: ErrShuttingDown})
	case *EnsureDirectory:
		ctx.Respond(&DirectoryReady{Err: ErrShuttingDown})
	case *DrainExit:
		e.drainExit(ctx) // joins the drain under way
	case *Shutdown:
		if m.Force {
			// The graceful part ran out of time: close what is left now, with no drain, still in
			// order (tunnels say goodbye as they stop, before signaling goes); the exit's drain is
			// cut short (its goodbyes still go out).
			for _, pid := range e.tunnels {
				ctx.Send(pid, &messages.CloseTunnel{Reason: "engine shutdown (forced)", Drain: -1, Why: messages.EndEngineShutdown})
			}
			if e.exit != nil && !e.exitTold {
				e.exitTold = true
				ctx.Send(e.exit, &endWith{why: messages.EndEngineShutdown})
			}
			e.advance(ctx)
		}
		ctx.Respond(&ShutdownResponse{}) // the first caller still waits for the real end
	}
}

// killed ignores everything: the engine is being stopped with its children.
func (e *engineActor) killed(actor.Context) {}

// hubLost: the health hub stopped while the engine runs (it panicked). It held only registrations
// and cadences: a fresh one takes over and every tunnel registers its current leg with it — unless
// signaling is gone too (nothing to ping with) or hubs were lost too often.
func (e *engineActor) hubLost(ctx actor.Context) {
	e.hub = nil
	action := "respawned"
	switch {
	case e.signaling == nil:
		action = "not replaced: no signaling"
	case !mayRespawn(&e.hubRespawns):
		action = fmt.Sprintf("not replaced: lost %d times within %v", len(e.hubRespawns)+1, exitRespawnWindow)
	default:
		e.spawnHub(ctx)
		for _, pid := range e.tunnels {
			ctx.Send(pid, &healthHubReplaced{hub: e.hub})
		}
	}
	e.cfg.Logger.Error("health hub stopped unexpectedly", "action", action)
	e.lost(ctx, "health hub", action)
}

// spawnHub starts the health hub, which judges the health of all the engine's tunnels.
func (e *engineActor) spawnHub(ctx actor.Context) {
	e.hub = ctx.Spawn(NewHealthHubProps(e.signaling, e.cfg.Logger))
	ctx.Watch(e.hub)
}

// advance moves shutdown to its next phase once the current one has finished.
func (e *engineActor) advance(ctx actor.Context) {
	switch {
	case len(e.tunnels) > 0, len(e.layered) > 0:
	case e.dir != nil:
		ctx.Stop(e.dir) // it owns only its entries, watchers and timers; it unwatches signaling as it stops
	case e.hub != nil:
		ctx.Stop(e.hub) // it owns only cadences and probes; with the tunnels gone it watches nothing
	case e.exit != nil:
		// It drains since Shutdown and ends itself (its connections record engine_shutdown);
		// Terminated moves shutdown on.
	case e.signaling != nil:
		// Poison, not Stop: a stop is a system message and overtakes user messages still in the
		// mailbox — the goodbyes the tunnels and the exit sent as they stopped would be lost.
		ctx.Poison(e.signaling)
	default:
		if e.stopper != nil {
			ctx.Send(e.stopper, &ShutdownResponse{})
			e.stopper = nil
		}
	}
}
