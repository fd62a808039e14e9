package messages

import (
	"net/netip"
	"time"
)

// TunnelState names a state of the tunnel state machine (docs/state-machines.md).
type TunnelState string

// Tunnel states.
const (
	StateNegotiating   TunnelState = "negotiating"   // asking the exit for a session over signaling
	StateHandshaking   TunnelState = "handshaking"   // device configured, waiting for the first handshake
	StateUp            TunnelState = "up"            // data plane proven; proxies accept
	StateSwitching     TunnelState = "switching"     // Up on the old exit while a session with the new one comes up
	StateReconfiguring TunnelState = "reconfiguring" // old device released, new session with the same exit coming up
	StateDraining      TunnelState = "draining"      // Close called: proxies refuse, active connections finish
	StateDegraded      TunnelState = "degraded"      // data plane healthy, signaling failing: traffic flows
	StateReconnecting  TunnelState = "reconnecting"  // data plane lost: renegotiating, with backoff, over the configured exits
	StateClosing       TunnelState = "closing"       // Close called; releasing
	StateClosed        TunnelState = "closed"        // every resource released
	StateFailed        TunnelState = "failed"        // could not come up; Cause says why
)

// Serving reports whether a tunnel in state s carries connections (and can switch): Up, Degraded,
// Switching. /readyz, the ready line and reload judge tunnels by it.
func (s TunnelState) Serving() bool {
	return s == StateUp || s == StateDegraded || s == StateSwitching
}

// TunnelStateChanged is emitted on every transition of a tunnel.
type TunnelStateChanged struct {
	TunnelID string
	From, To TunnelState
	Cause    string // why: an error, or what asked for the transition
	// Reconnect classes a transition into Reconnecting (one of ReconnectCauses); "" for any other.
	Reconnect string
	At        time.Time
}

// Why a tunnel began to reconnect, as a bounded set of classes (TunnelStateChanged.Reconnect), for
// counting: Cause says more, in words.
const (
	ReconnectDataPlane   = "data_plane"   // the health checks found the data plane dead
	ReconnectExitGoodbye = "exit_goodbye" // the exit said goodbye (it shut down, or ended the session)
	ReconnectSessionLost = "session_lost" // the exit answers but no longer holds the session (it restarted)
	ReconnectDeviceLost  = "device_lost"  // the tunnel's device or leg stopped
	ReconnectStart       = "start"        // a tunnel started with StartTunnel: its first session failed
	ReconnectOther       = "other"        // anything else
)

// ReconnectCauses lists the classes of TunnelStateChanged.Reconnect.
var ReconnectCauses = []string{ReconnectDataPlane, ReconnectExitGoodbye, ReconnectSessionLost, ReconnectDeviceLost,
	ReconnectStart, ReconnectOther}

// ChildLost is emitted when an actor stopped without its parent asking (it panicked and its
// supervisor stopped it, which also released what it held) and the parent reacted: Action says how
// (a fresh one spawned, the tunnel reconnecting, the role given up).
type ChildLost struct {
	Parent   string // e.g. "tunnel t1", "engine"
	Child    string // its role: "keepalive", "exit", "signaling"
	TunnelID string // when the parent is a tunnel
	Action   string
	At       time.Time
}

// ActorPanicked is emitted for every panic in an actor's Receive, after its supervisor stopped it.
type ActorPanicked struct {
	Actor  string // the actor's PID
	Reason string
	At     time.Time
}

// HandshakeCompleted: the first WireGuard handshake with the peer completed and a round trip
// through the tunnel to the exit's connect service succeeded.
type HandshakeCompleted struct {
	SessionID string
	RTT       time.Duration // of the probe round trip, handshake included
}

// SessionOpened is emitted by an exit when it grants a session.
type SessionOpened struct {
	ExitID, SessionID, ClientID string
	ClientAddresses             []netip.Addr
}

// SessionClosed is emitted by an exit when a session ends.
type SessionClosed struct {
	ExitID, SessionID, Reason string
}

// TunnelInfo describes a tunnel at one moment.
type TunnelInfo struct {
	ID, ExitID, SessionID string
	State                 TunnelState
	SOCKSAddr, HTTPAddr   string // bound proxy addresses; empty when not configured
	ClientAddresses       []netip.Addr
	ExitEndpoint          netip.AddrPort
	UpSince               time.Time // when it first came up (zero: not yet)
	Reconnects            int       // completed reconnections since the tunnel opened
	OpenedAt              time.Time // when it was opened (its actor started)
	// LastHandshake is the most recent completed WireGuard handshake of the current session (zero:
	// none yet, or no current session). WireGuard renews it about every 2 minutes while traffic flows.
	LastHandshake time.Time
	Cause         string   // what its last transition said
	Exits         []string // its failover list: the configured exit first, then the others
}

// GetTunnelInfo asks a tunnel for its TunnelInfo; the reply is TunnelInfoResponse.
type GetTunnelInfo struct{}

// TunnelInfoResponse answers GetTunnelInfo.
type TunnelInfoResponse struct{ Info TunnelInfo }

// CloseTunnel asks a tunnel to close; the reply is CloseTunnelResponse once it has said goodbye and
// released every resource. Active connections may finish for Drain first: 0 means the tunnel's
// configured drain timeout, a negative value none.
type CloseTunnel struct {
	Reason string
	Drain  time.Duration
	// Why is recorded for connections still open when the drain ends: drain_timeout by default,
	// tunnel_closed with no drain, engine_shutdown when the engine shuts down.
	Why EndReason
}

// SwitchTunnel moves a tunnel to another exit, make-before-break; the reply is SwitchTunnelResponse.
type SwitchTunnel struct {
	ExitID string
	Drain  time.Duration // for the old session's connections; 0: the configured drain timeout
}

// SwitchTunnelResponse answers SwitchTunnel: Err is nil once new connections go to the new exit.
type SwitchTunnelResponse struct {
	Info TunnelInfo
	Err  error
}

// ReconfigureTunnel renews a tunnel's session with the same exit (new keys, endpoint, addresses): the
// old device is released before the new one is created; the proxy listeners stay. The reply is
// ReconfigureTunnelResponse.
type ReconfigureTunnel struct{}

// ReconfigureTunnelResponse answers ReconfigureTunnel.
type ReconfigureTunnelResponse struct {
	Info TunnelInfo
	Err  error
}

// CloseTunnelResponse answers CloseTunnel.
type CloseTunnelResponse struct{}

// OpenTunnelResponse answers the opener of a tunnel once: when it is Up, or when it failed.
type OpenTunnelResponse struct {
	Info TunnelInfo
	Err  error
}
