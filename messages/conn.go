package messages

import "time"

// Side names one of a connection's two sockets.
type Side string

// Sides. On a client, incoming is the local proxy client and outgoing the tunnel; on an exit,
// incoming is the tunnel and outgoing the destination.
const (
	SideIncoming Side = "incoming"
	SideOutgoing Side = "outgoing"
)

// EndReason says why one side of a connection ended. The set is closed; docs/connections.md
// describes when each is recorded.
type EndReason string

// End reasons.
const (
	EndNormal           EndReason = "normal"            // the side closed its stream (EOF) and everything was delivered
	EndReset            EndReason = "reset"             // the side reset the connection (ECONNRESET, EPIPE)
	EndTimeout          EndReason = "timeout"           // a connect request, dial or write did not finish in time
	EndInactivity       EndReason = "inactivity"        // no bytes either way for the inactivity timeout
	EndMaxLifetime      EndReason = "max_lifetime"      // the connection reached its maximum lifetime
	EndLimit            EndReason = "limit"             // refused: too many connections
	EndPolicyDenied     EndReason = "policy_denied"     // refused: the exit's egress policy
	EndDialFailed       EndReason = "dial_failed"       // the destination could not be reached
	EndTunnelClosed     EndReason = "tunnel_closed"     // the tunnel (or exit session) under it closed
	EndDrainTimeout     EndReason = "drain_timeout"     // still open when a drain ran out of time
	EndEngineShutdown   EndReason = "engine_shutdown"   // the engine shut down
	EndProtocolError    EndReason = "protocol_error"    // the client's proxy or connect request was malformed
	EndAuthFailed       EndReason = "auth_failed"       // the proxy client gave no or wrong credentials
	EndHandshakeTimeout EndReason = "handshake_timeout" // the proxy client did not finish its greeting and request in time
	EndError            EndReason = "error"             // any other I/O error
	EndInternalError    EndReason = "internal_error"    // Warren itself failed (a panic while setting up), logged with its stack
)

// AllEndReasons lists the set, for documentation and exhaustive stats.
var AllEndReasons = []EndReason{EndNormal, EndReset, EndTimeout, EndInactivity, EndMaxLifetime, EndLimit,
	EndPolicyDenied, EndDialFailed, EndTunnelClosed, EndDrainTimeout, EndEngineShutdown, EndProtocolError, EndAuthFailed, EndHandshakeTimeout, EndError, EndInternalError}

// ConnectionEnded is emitted once per connection when its actor has stopped and released both sockets.
type ConnectionEnded struct {
	Owner     string // tunnel id, or exit id/session id
	Role      string // "client" or "exit"
	ID        uint64
	Source    string
	Target    string
	Duration  time.Duration
	BytesIn   int64 // incoming → outgoing, as delivered to the outgoing side
	BytesOut  int64 // outgoing → incoming, as delivered to the incoming side
	Incoming  EndReason
	Outgoing  EndReason
	Refused   bool // never relayed: refused at setup (limit, policy, dial failure, bad request)
	Keepalive bool // the incoming side was seen sending TCP keep-alive probes
	// UDP is set for a SOCKS5 UDP association (client) or its exit half: its datagram counts.
	// BytesIn and BytesOut then count payload bytes (no SOCKS5 header).
	UDP *UDPCounts
}

// DropReason says why a UDP association dropped a datagram.
type DropReason string

// Drop reasons (docs/connections.md, "UDP").
const (
	DropForeignSource DropReason = "foreign_source" // client: not from the associating client's address
	DropFragmented    DropReason = "fragmented"     // FRAG ≠ 0: fragments are not reassembled
	DropMalformed     DropReason = "malformed"      // a header that does not parse, an unknown address type, port 0
	DropPolicyDenied  DropReason = "policy_denied"  // exit: the egress policy refuses the destination
	DropUnresolvable  DropReason = "unresolvable"   // exit: the destination's name did not resolve
	DropLimit         DropReason = "limit"          // exit: the association already sends to udp_max_destinations others
	DropUnknownSource DropReason = "unknown_source" // exit: a datagram from an address the association never sent to
	DropSendFailed    DropReason = "send_failed"    // the socket refused the datagram (unreachable, too large, no buffer)
)

// AllDropReasons lists the set, for documentation and exhaustive stats.
var AllDropReasons = [...]DropReason{DropForeignSource, DropFragmented, DropMalformed, DropPolicyDenied, DropUnresolvable,
	DropLimit, DropUnknownSource, DropSendFailed}

// UDPCounts are one association's datagrams: In from the client towards destinations, Out back;
// each counted when the next socket took it. Dropped counts the datagrams dropped, by reason.
type UDPCounts struct {
	DatagramsIn, DatagramsOut int64
	Dropped                   map[DropReason]uint64
}

// UDPStats sums the UDP associations that ended (on a tunnel, also the active ones so far).
type UDPStats struct {
	Associations uint64 // ended
	UDPCounts
}

// ConnectionOpened is emitted when a connection actor starts (refusals included).
type ConnectionOpened struct {
	Owner string
	Role  string
	ID    uint64
}

// ConnectionStats counts connections by side and end reason.
type ConnectionStats struct {
	Active int                           // relaying or setting up now
	Opened uint64                        // accepted so far
	Ended  uint64                        // ended so far (refusals included)
	ByEnd  map[Side]map[EndReason]uint64 // per side, per reason
	// Bytes delivered by ended connections plus, on a tunnel's client side, those delivered so far
	// by its active ones: it only grows.
	Bytes struct{ In, Out int64 }
	UDP   UDPStats // SOCKS5 UDP associations (client) and their exit halves (exit)
}

// ConnInfo describes an active proxied connection of a tunnel.
type ConnInfo struct {
	ID     uint64
	Kind   string // the proxy it came through: "socks5" or "http"
	Source string // the proxy client's address
	Target string // where it goes, as the client asked ("" while still in its handshake)
	Since  time.Time
	// BytesIn (client → target) and BytesOut (target → client) delivered so far.
	BytesIn, BytesOut int64
	Exit              string // the exit of the session it relays over
}

// GetConnections asks a tunnel for its active proxied connections; the reply is ConnectionsResponse.
type GetConnections struct{}

// ConnectionsResponse answers GetConnections, sorted by ID.
type ConnectionsResponse struct{ Conns []ConnInfo }

// GetStats asks a tunnel (or the engine) for its ConnectionStats; the reply is StatsResponse.
type GetStats struct{}

// StatsResponse answers GetStats.
type StatsResponse struct{ Stats ConnectionStats }
