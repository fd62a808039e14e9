package messages

import (
	"net/netip"
	"time"
)

// TunnelState names a state of the tunnel state machine (docs/state-machines.md).
type TunnelState string

// Tunnel states.
const (
	StateNegotiating TunnelState = "negotiating" // asking the exit for a session over signaling
	StateHandshaking TunnelState = "handshaking" // device configured, waiting for the first handshake
	StateUp          TunnelState = "up"          // data plane proven; proxies accept
	StateClosing     TunnelState = "closing"     // Close called; releasing
	StateClosed      TunnelState = "closed"      // every resource released
	StateFailed      TunnelState = "failed"      // could not come up; Cause says why
)

// TunnelStateChanged is emitted on every transition of a tunnel.
type TunnelStateChanged struct {
	TunnelID string
	From, To TunnelState
	Cause    string // why: an error, or what asked for the transition
	At       time.Time
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
	UpSince               time.Time
}

// GetTunnelInfo asks a tunnel for its TunnelInfo; the reply is TunnelInfoResponse.
type GetTunnelInfo struct{}

// TunnelInfoResponse answers GetTunnelInfo.
type TunnelInfoResponse struct{ Info TunnelInfo }

// CloseTunnel asks a tunnel to close; the reply is CloseTunnelResponse once it has said goodbye and
// released every resource.
type CloseTunnel struct{ Reason string }

// CloseTunnelResponse answers CloseTunnel.
type CloseTunnelResponse struct{}

// OpenTunnelResponse answers the opener of a tunnel once: when it is Up, or when it failed.
type OpenTunnelResponse struct {
	Info TunnelInfo
	Err  error
}
