package actors

// The engine actor's side of the exit directory (directory.go): spawned at the first
// EnsureDirectory, replaced if lost (like the health hub), stopped after the tunnels.

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
)

// ensureDirectory answers EnsureDirectory, spawning the directory at the first ask.
func (e *engineActor) ensureDirectory(ctx actor.Context) *DirectoryReady {
	switch {
	case e.dir != nil:
	case e.signaling == nil:
		return &DirectoryReady{Err: ErrNoSignaling}
	case e.dirGivenUp:
		return &DirectoryReady{Err: ErrNoDirectory}
	default:
		e.spawnDirectory(ctx)
	}
	return &DirectoryReady{PID: e.dir}
}

func (e *engineActor) spawnDirectory(ctx actor.Context) {
	dc := e.cfg.Directory
	dc.Signaling, dc.Stats = e.signaling, e.cfg.Signaling.Stats
	if dc.Logger == nil {
		dc.Logger = e.cfg.Logger
	}
	e.dir = ctx.Spawn(NewDirectoryProps(dc))
	ctx.Watch(e.dir)
}

// directoryLost: the directory stopped while the engine runs (it panicked). It held only what the
// bus tells anyone who asks: a fresh one runs a discovery round and is complete again within
// discoverWindow. Its watchers watch it, and ask EnsureDirectory again. Not without signaling, and
// not when lost too often.
func (e *engineActor) directoryLost(ctx actor.Context) {
	e.dir = nil
	action := "respawned"
	switch {
	case e.signaling == nil:
		action = "not replaced: no signaling"
	case !mayRespawn(&e.dirRespawns):
		e.dirGivenUp = true
		action = fmt.Sprintf("not replaced: lost %d times within %v", len(e.dirRespawns)+1, exitRespawnWindow)
	default:
		e.spawnDirectory(ctx)
	}
	e.cfg.Logger.Error("exit directory stopped unexpectedly", "action", action)
	e.lost(ctx, "exit directory", action)
}
