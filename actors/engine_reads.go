package actors

// What the engine actor answers about itself, for the engine's API (no actor waits on another):
// connection statistics by role, its own tunnels by name, and its long-lived children for Ping.

import (
	"errors"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// ErrTunnelExists: an OpenTunnel with Named gave the name of one of the engine's own tunnels that
// is not Closed yet.
var ErrTunnelExists = errors.New("tunnel name in use")

// GetTunnels asks the engine actor for its own (Named) tunnels, or for the one called Name if it is
// set; the reply is *TunnelsList. The engine actor answers from its own table: it asks no tunnel.
type GetTunnels struct{ Name string }

// TunnelsList answers GetTunnels: PIDs by tunnel name.
type TunnelsList struct{ Tunnels map[string]*actor.PID }

// GetEngineStats asks for connection statistics by role; the reply is *EngineStatsResponse.
type GetEngineStats struct{}

// EngineStatsResponse answers GetEngineStats.
type EngineStatsResponse struct {
	ByRole map[string]messages.ConnectionStats
}

func (e *engineActor) roleStats(role string) *messages.ConnectionStats {
	st := e.stats[role]
	if st == nil {
		st = &messages.ConnectionStats{ByEnd: newByEnd()}
		e.stats[role] = st
	}
	return st
}

// countConnection counts a connection's start or end in its role's statistics.
func (e *engineActor) countConnection(m any) {
	switch m := m.(type) {
	case *messages.ConnectionOpened:
		st := e.roleStats(m.Role)
		st.Opened++
		st.Active++
	case *messages.ConnectionEnded:
		st := e.roleStats(m.Role)
		st.Active--
		st.Ended++
		st.ByEnd[messages.SideIncoming][m.Incoming]++
		st.ByEnd[messages.SideOutgoing][m.Outgoing]++
		if m.UDP != nil {
			addUDP(&st.UDP, m.UDP)
		}
	}
}

// engineStats answers GetEngineStats. Bytes are what every connection of the role delivered so
// far, ended or active (ByteTotals, which their copy loops add to), so they only grow.
func (e *engineActor) engineStats() *EngineStatsResponse {
	out := map[string]messages.ConnectionStats{}
	for role, st := range e.stats {
		c := *st
		c.ByEnd = cloneByEnd(st.ByEnd)
		c.UDP.Dropped = nil
		addUDPCounts(&c.UDP.UDPCounts, &messages.UDPCounts{Dropped: st.UDP.Dropped})
		out[role] = c
	}
	for role, b := range map[string]*ByteTotals{"client": e.cfg.ClientBytes, "exit": e.cfg.ExitBytes} {
		c := out[role]
		c.Bytes.In, c.Bytes.Out = b.In(), b.Out()
		out[role] = c
	}
	return &EngineStatsResponse{ByRole: out}
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

func (e *engineActor) parts() *EngineParts {
	return &EngineParts{Signaling: e.signaling, Exit: e.exit,
		ExitLost: e.cfg.Exit != nil && e.exit == nil && !e.exitDrained && e.starter == nil}
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
