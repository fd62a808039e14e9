package actors

// The engine actor's children that are not its own roles: actors layered on the engine (a pool),
// and the bookkeeping of children it lost.

import (
	"fmt"
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

// AwaitChildGone asks the engine to answer (*ChildGone) once it has seen a child started with
// SpawnChild terminate — at once if it has already. Its owner waits for it after stopping the child,
// so that a child spawned again under the same name cannot meet the old one's Terminated.
type AwaitChildGone struct{ PID *actor.PID }

// ChildGone answers AwaitChildGone.
type ChildGone struct{}

// spawnChild answers SpawnChild. A child whose name is still held by one that stopped but whose
// Terminated the engine has not seen yet is refused like a name in use: both would have one PID id.
func (e *engineActor) spawnChild(ctx actor.Context, m *SpawnChild) {
	if _, busy := e.layered[ctx.Self().Id+"/"+m.Name]; busy {
		ctx.Respond(&ChildSpawned{Err: fmt.Errorf("spawn %s: %w", m.Name, actor.ErrNameExists)})
		return
	}
	pid, err := ctx.SpawnNamed(m.Props, m.Name)
	if err != nil {
		ctx.Respond(&ChildSpawned{Err: fmt.Errorf("spawn %s: %w", m.Name, err)})
		return
	}
	ctx.Watch(pid)
	e.layered[pid.Id] = pid
	ctx.Respond(&ChildSpawned{PID: pid})
}

func (e *engineActor) awaitChildGone(ctx actor.Context, m *AwaitChildGone) {
	if m.PID == nil || e.layered[m.PID.Id] == nil {
		ctx.Respond(&ChildGone{})
		return
	}
	if e.goneWait == nil {
		e.goneWait = map[string][]*actor.PID{}
	}
	e.goneWait[m.PID.Id] = append(e.goneWait[m.PID.Id], ctx.Sender())
}

// childGone forgets a layered child that terminated and answers those waiting for it; it reports
// whether who was one.
func (e *engineActor) childGone(ctx actor.Context, who *actor.PID) bool {
	if _, ok := e.layered[who.Id]; !ok {
		return false
	}
	delete(e.layered, who.Id)
	for _, w := range e.goneWait[who.Id] {
		ctx.Send(w, &ChildGone{})
	}
	delete(e.goneWait, who.Id)
	return true
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
