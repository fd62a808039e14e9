package engine

// The exit directory: which exits are live on the bus, as their signed announcements say
// (docs/pool.md).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

// ErrNoDirectory: the engine's exit directory was lost (it panicked) more than 3 times within a
// minute and is not replaced again; restart the engine.
var ErrNoDirectory = actors.ErrNoDirectory

// ExitEntry is one live exit as its newest verified announcement describes it: id, identity
// (trusted for the id by this engine's trust.operators or trust.any_exit, or any exit on a private
// bus), endpoint, labels, capacity, load, state (serving or draining: Serving reports whether it
// admits sessions), version and cadence. Entries are immutable and shared: read only.
type ExitEntry = messages.ExitEntry

// ExitDirectory is the directory at one moment, sorted by exit id; what a watcher of the directory
// actor hears (actors.WatchExits).
type ExitDirectory = messages.ExitDirectory

// Exits lists the live exits on the bus, sorted by id. The first call starts the engine's exit
// directory, which asks every exit for a fresh announcement and listens to their announcements
// from then on; it returns once that first round has had its answers (about half a second). An exit
// is listed from its first verified, trusted announcement until it announces that it leaves or
// misses three of its announcements; a draining exit stays listed with State "draining".
func (e *Engine) Exits(ctx context.Context) ([]*ExitEntry, error) {
	// A directory lost between the two asks has been replaced (or the engine closes): ask again, once.
	for attempt := 1; ; attempt++ {
		pid, err := e.Directory(ctx)
		if err != nil {
			return nil, err
		}
		res, err := await(ctx, e.system.Root.RequestFuture(pid, &actors.GetExits{}, untilDeadline(ctx, 10*time.Second)))
		if err != nil && !errors.Is(err, actor.ErrDeadLetter) {
			return nil, fmt.Errorf("exits: %w", err)
		}
		if dir, _ := res.(*messages.ExitDirectory); dir != nil && dir.Ready {
			return dir.Exits, nil
		}
		if attempt == 2 {
			return nil, fmt.Errorf("exits: the directory stopped: %w", ErrEngineClosed)
		}
	}
}

// Directory returns the PID of the engine's exit directory actor, starting it at the first call.
// It is for packages layered on the engine (the pool), which talk to it with the messages of
// actors/directory.go: actors.WatchExits (a *messages.ExitDirectory at once and after every
// change), actors.UnwatchExits, actors.GetExits. Such a watcher should watch the PID too: if the
// directory is lost the engine replaces it, and the watcher asks Directory again. Errors:
// ErrNotStarted, ErrEngineClosed (also while the engine shuts down), ErrNoSignaling (signaling was
// lost), ErrNoDirectory (the directory was lost too often).
func (e *Engine) Directory(ctx context.Context) (*actor.PID, error) {
	if !e.started.Load() || e.pid == nil {
		return nil, ErrNotStarted
	}
	select {
	case <-e.closed:
		return nil, ErrEngineClosed
	default:
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.EnsureDirectory{}, untilDeadline(ctx, 5*time.Second)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return nil, ErrEngineClosed
		}
		return nil, fmt.Errorf("exit directory: %w", err)
	}
	r, _ := res.(*actors.DirectoryReady)
	switch {
	case r == nil || errors.Is(r.Err, actors.ErrShuttingDown):
		return nil, ErrEngineClosed
	case r.Err != nil:
		return nil, fmt.Errorf("exit directory: %w", r.Err)
	}
	return r.PID, nil
}
