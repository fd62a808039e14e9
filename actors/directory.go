package actors

// Contract of the exit directory (implemented in this file by the directory actor; see docs/pool.md).

import "github.com/asynkron/protoactor-go/actor"

// EnsureDirectory asks the engine actor for its exit directory, spawned on the first ask; the reply
// is *DirectoryReady.
type EnsureDirectory struct{}

// DirectoryReady answers EnsureDirectory.
type DirectoryReady struct {
	PID *actor.PID
	Err error // ErrNoSignaling, or the engine is shutting down
}

// WatchExits subscribes PID to the directory: it hears *messages.ExitDirectory at once and after
// every change (an exit joins, leaves or changes state: at once; load only: at most once per
// directoryLoadEvery). UnwatchExits ends it; a watcher that stops is forgotten (it is watched).
type WatchExits struct{ PID *actor.PID }

// UnwatchExits ends a WatchExits.
type UnwatchExits struct{ PID *actor.PID }

// GetExits asks the directory for its content; the reply is *messages.ExitDirectory, sent once the
// first discovery round has finished.
type GetExits struct{}
