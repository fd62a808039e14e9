package actors

// The engine's side of its exit: spawned at StartEngine, replaced if lost (at most
// exitRespawnLimit times within exitRespawnWindow), drained on DrainExit and at shutdown — an exit
// that stops once told to drain (or to end) is gone for good, not lost.

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
)

// DrainExit drains the engine's exit: it admits no session, tells its clients, lets its flows
// run until nothing is left or its drain timeout, then ends and stops (it is not replaced). The
// reply is *DrainExitResponse once the exit has stopped.
type DrainExit struct{}

// DrainExitResponse answers DrainExit: Err is ErrNoExit for an engine that serves no exit.
type DrainExitResponse struct{ Err error }

// ErrNoExit: the engine serves no exit (none configured, or it was given up).
var ErrNoExit = errors.New("engine serves no exit")

// spawnExit starts the exit role; it reports ExitReady to the engine.
func (e *engineActor) spawnExit(ctx actor.Context) {
	xc := *e.cfg.Exit
	xc.Signaling, xc.Events, xc.ReadyTo, xc.Bytes = e.signaling, ctx.Self(), ctx.Self(), e.cfg.ExitBytes
	if xc.Logger == nil {
		xc.Logger = e.cfg.Logger
	}
	e.exit = ctx.Spawn(NewExitProps(xc))
	ctx.Watch(e.exit)
}

// drainExit tells the exit to drain (once) and answers the caller once it has stopped.
func (e *engineActor) drainExit(ctx actor.Context) {
	switch {
	case e.exit == nil && e.exitDrained:
		ctx.Respond(&DrainExitResponse{})
		return
	case e.exit == nil:
		ctx.Respond(&DrainExitResponse{Err: ErrNoExit})
		return
	}
	if ctx.Sender() != nil {
		e.drainers = append(e.drainers, ctx.Sender())
	}
	if !e.exitDrain {
		e.exitDrain = true
		ctx.Send(e.exit, &drainExit{})
	}
}

// exitEnded: the exit stopped after it was told to drain (or to end): it is gone for good.
func (e *engineActor) exitEnded(ctx actor.Context) {
	e.exit, e.exitDrained = nil, true
	for _, pid := range e.drainers {
		ctx.Send(pid, &DrainExitResponse{})
	}
	e.drainers = nil
}

// exitLost: the exit stopped while the engine runs (it panicked; its devices released the sessions
// as they stopped). A fresh exit with the same configuration takes over, so its clients (whose
// pings now find their sessions unknown) reconnect to it — unless exits were lost too often, when
// the role is given up rather than restarted in a loop.
func (e *engineActor) exitLost(ctx actor.Context) {
	e.exit, e.exitServing = nil, false
	if e.signaling == nil {
		action := "not replaced: no signaling"
		e.cfg.Logger.Error("exit stopped unexpectedly", "action", action)
		e.lost(ctx, "exit", action)
		return
	}
	if !mayRespawn(&e.exitRespawns) {
		action := fmt.Sprintf("not replaced: lost %d times within %v", len(e.exitRespawns)+1, exitRespawnWindow)
		e.cfg.Logger.Error("exit stopped unexpectedly", "action", action)
		e.lost(ctx, "exit", action)
		return
	}
	e.spawnExit(ctx)
	e.cfg.Logger.Error("exit stopped unexpectedly", "action", "respawned")
	e.lost(ctx, "exit", "respawned")
}
