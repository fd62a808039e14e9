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

// namedTunnels are the engine's own tunnels (OpenTunnel.Named) by name. A name is taken from the
// open until the tunnel is Closed: its TunnelStateChanged to Closed (sent with the tunnel as
// sender, before the tunnel answers its closers) frees it, so that a Close that returned lets the
// same name be opened again at once; Terminated frees what is left (a tunnel that never said so).
type namedTunnels struct {
	byName map[string]*actor.PID
	byPID  map[string]string // PID id → name
}

func newNamedTunnels() namedTunnels {
	return namedTunnels{byName: map[string]*actor.PID{}, byPID: map[string]string{}}
}

func (n namedTunnels) taken(name string) bool { _, ok := n.byName[name]; return ok }

func (n namedTunnels) add(name string, pid *actor.PID) {
	n.byName[name], n.byPID[pid.Id] = pid, name
}

// forget frees name if pid (the sender of its Closed event) holds it.
func (n namedTunnels) forget(name string, pid *actor.PID) {
	if held := n.byName[name]; held != nil && pid != nil && held.Equal(pid) {
		delete(n.byName, name)
		delete(n.byPID, pid.Id)
	}
}

func (n namedTunnels) terminated(pid *actor.PID) {
	if name, ok := n.byPID[pid.Id]; ok {
		n.forget(name, pid)
	}
}

// list answers GetTunnels: every name, or only name if it is set (an empty list if it is not taken).
func (n namedTunnels) list(name string) *TunnelsList {
	out := map[string]*actor.PID{}
	for k, pid := range n.byName {
		if name == "" || k == name {
			out[k] = pid
		}
	}
	return &TunnelsList{Tunnels: out}
}

// GetEngineParts asks the engine actor for its long-lived children (for Engine.Ping, which then
// asks each whether it answers); the reply is *EngineParts.
type GetEngineParts struct{}

// EngineParts answers GetEngineParts.
type EngineParts struct {
	Signaling *actor.PID // nil: lost
	Exit      *actor.PID // nil: none
	// ExitLost: an exit is configured, but none runs: it was lost and given up (not drained).
	ExitLost bool
}
