package actors

// The engine actor's children that are not its own roles: actors layered on the engine (a pool),
// and the bookkeeping of children it lost.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// SpawnChild starts an actor layered on the engine (a pool) as the engine actor's child; the reply
// is *ChildSpawned. When the engine shuts down it tells such children ReleaseTunnels as it closes
// the tunnels (which they opened through OpenTunnel and which stay the engine's), and waits for
// their Terminated with the tunnels', so that nothing reopens what the shutdown closes.
type SpawnChild struct {
	Props *actor.Props
	Name  string // its role, for logs and ChildLost
}

// ReleaseTunnels tells a child started with SpawnChild that the engine shuts down and closes every
// tunnel itself (with their drains): the child lets go of the tunnels it opened without closing
// them, and stops. The engine moves on at its Terminated.
type ReleaseTunnels struct{}

// ChildSpawned answers SpawnChild.
type ChildSpawned struct {
	PID *actor.PID
	Err error
}

// mayRespawn forgets the respawns older than exitRespawnWindow and, if fewer than exitRespawnLimit
// remain, records one now.
func mayRespawn(times *[]time.Time) bool {
	now := time.Now()
	recent := (*times)[:0]
	for _, at := range *times {
		if now.Sub(at) < exitRespawnWindow {
			recent = append(recent, at)
		}
	}
	*times = recent
	if len(recent) >= exitRespawnLimit {
		return false
	}
	*times = append(*times, now)
	return true
}

func (e *engineActor) lost(ctx actor.Context, child, action string) {
	if e.cfg.Sink != nil {
		e.cfg.Sink(&messages.ChildLost{Parent: "engine", Child: child, Action: action, At: time.Now()})
	}
}
