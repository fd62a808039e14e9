package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
)

// Errors of an exit's drain.
var (
	// ErrNoExit: DrainExit or ExitSessions on an engine that serves no exit (none configured,
	// drained, or given up).
	ErrNoExit = actors.ErrNoExit
	// ErrExitDraining: the exit asked refused the session because it drains (wrapped with
	// ErrSessionRefused). A tunnel tries its next exit at once rather than retrying this one.
	ErrExitDraining = actors.ErrExitDraining
)

// DrainExit drains this engine's exit and returns once it has stopped: it admits no session any
// more (requests are refused "draining", and clients try their next exit at once), announces
// draining, and tells each client session so over signaling; clients move their tunnels to other
// exits make-before-break while the flows already running here go on. The drain is over when no
// client session is left, or no forwarded flow is open, or at the exit's drain_timeout; the exit
// then ends the flows left (engine_shutdown), says goodbye to its clients, announces that it
// leaves and stops. The engine goes on without it (its tunnels are untouched); the exit is not
// started again. If ctx ends first, DrainExit returns ctx's error and the drain goes on. Engine.Close
// drains the exit the same way, beside its tunnels' drains. It returns ErrNoExit for an engine
// without an exit, and nil for one whose exit has drained already.
func (e *Engine) DrainExit(ctx context.Context) error {
	if !e.started.Load() || e.pid == nil {
		return ErrNotStarted
	}
	select {
	case <-e.closed:
		return ErrEngineClosed
	default:
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.DrainExit{}, untilDeadline(ctx, time.Hour)+forceGrace))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return ErrEngineClosed
		}
		return fmt.Errorf("drain exit: %w", err)
	}
	if r, ok := res.(*actors.DrainExitResponse); ok && r.Err != nil {
		return fmt.Errorf("drain exit: %w", r.Err)
	}
	return nil
}

// ExitSession describes a client session of this engine's exit.
type ExitSession = actors.ExitSessionInfo

// ExitSessions lists the client sessions of this engine's exit, sorted by ID (static peers are
// not sessions: they are left out). ErrNoExit if the engine serves no exit.
func (e *Engine) ExitSessions(ctx context.Context) ([]ExitSession, error) {
	if e.pid == nil {
		return nil, ErrNotStarted
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.GetExitSessions{}, untilDeadline(ctx, 5*time.Second)))
	if errors.Is(err, actor.ErrDeadLetter) {
		select {
		case <-e.closed:
			return nil, ErrEngineClosed
		default:
			return nil, ErrNoExit // the exit stopped as it was asked
		}
	}
	if err != nil {
		return nil, err
	}
	r := res.(*actors.ExitSessions)
	return r.Sessions, r.Err
}
