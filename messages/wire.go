package messages

import "encoding/json"

// WireVersion is the version of the signaling wire format. A message with another version is refused.
const WireVersion = 1

// MaxWireSize caps every signaling message, envelope included. Larger messages are refused unread.
const MaxWireSize = 16 << 10

// Envelope wraps every signaling message. Type names the body's type.
type Envelope struct {
	Version int             `json:"v"`
	Type    string          `json:"type"`
	Body    json.RawMessage `json:"body"`
}

// Types of signaling messages.
const (
	TypeSessionRequest  = "session.request"
	TypeSessionResponse = "session.response"
	TypeSessionClose    = "session.close"
	TypeSessionsPing    = "sessions.ping"
	TypeSessionsPong    = "sessions.pong"
	TypeError           = "error"
)

// SessionRequest asks an exit for a tunnel session. Sent by a client to the exit's RPC subject.
type SessionRequest struct {
	SessionID   string `json:"session_id"`    // 32 hex characters chosen by the client
	ExitID      string `json:"exit_id"`       // the exit asked
	ClientID    string `json:"client_id"`     // the client's long-term ed25519 public key, base64
	WGPublicKey string `json:"wg_public_key"` // the session's fresh WireGuard public key, base64
	// Certificate is the client's operator certificate, if it has one (exits may admit
	// operator-certified clients besides allowed_clients).
	Certificate string `json:"cert,omitempty"`
	Timestamp   int64  `json:"ts"`  // Unix milliseconds when signed
	Signature   string `json:"sig"` // ed25519 signature by ClientID over the fields above, base64
}

// SessionResponse grants a session: everything the client needs to configure its device.
type SessionResponse struct {
	SessionID       string   `json:"session_id"`
	ExitWGPublicKey string   `json:"exit_wg_public_key"` // base64
	Endpoint        string   `json:"endpoint"`           // the exit's WireGuard UDP endpoint, ip:port
	ClientAddresses []string `json:"client_addresses"`   // the client's tunnel addresses
	ExitAddresses   []string `json:"exit_addresses"`     // the exit's tunnel addresses; the connect service listens on the first
	ConnectPort     uint16   `json:"connect_port"`       // TCP port of the exit's connect service
	MTU             int      `json:"mtu"`
	ExitIdentity    string   `json:"exit_identity"` // the exit's ed25519 identity: it signs this response, pongs and goodbyes
	ExitID          string   `json:"exit_id"`       // the exit that answers
	ClientID        string   `json:"client_id"`     // the client it answers: a response is bound to one request
	// Certificate is the exit's operator certificate binding ExitID to ExitIdentity, if it has one.
	Certificate string `json:"cert,omitempty"`
	Timestamp   int64  `json:"ts"`  // Unix milliseconds when signed
	Signature   string `json:"sig"` // ed25519 by ExitIdentity over all the fields above
}

// SessionClose ends a session: a goodbye from whichever side is leaving. A client sends it to the
// exit's RPC subject, an exit to the client's events subject.
type SessionClose struct {
	SessionID string `json:"session_id"`
	Signer    string `json:"signer"` // the identity that signed: the client's, or the exit's
	Reason    string `json:"reason"`
	Timestamp int64  `json:"ts"`
	Signature string `json:"sig"`
}

// MaxPingSessions caps the sessions one SessionsPing asks about (a ping of 128 fits MaxWireSize
// with room to spare).
const MaxPingSessions = 128

// SessionsPing asks an exit which of a client's sessions it still holds: the signaling half of
// tunnel health. One ping covers up to MaxPingSessions sessions of one client on one exit, so a
// client with a thousand tunnels sends a few pings per interval, not a thousand. It changes no
// state. Signed by the sessions' client; Nonce is fresh per ping and comes back in the pong, so a
// pong cannot be replayed. (Replaced session.ping, which asked about one session: an exit of this
// version answers that with unknown_type.)
type SessionsPing struct {
	SessionIDs []string `json:"session_ids"` // 1..MaxPingSessions, distinct
	Nonce      string   `json:"nonce"`       // 32 hex characters
	ClientID   string   `json:"client_id"`
	Timestamp  int64    `json:"ts"`
	Signature  string   `json:"sig"`
}

// SessionsPong answers SessionsPing. Known lists the asked sessions the exit holds for the client
// that pinged; an asked session not listed is gone (the exit restarted, released it, or never held
// it for this client): that tunnel's data plane cannot work any more. Signed by the exit's identity.
type SessionsPong struct {
	Nonce     string   `json:"nonce"`     // the ping's
	ExitID    string   `json:"exit_id"`   // the exit that answers (one identity may serve several)
	ClientID  string   `json:"client_id"` // the client that pinged
	Known     []string `json:"known"`     // a subset of the ping's SessionIDs
	Signer    string   `json:"signer"`
	Timestamp int64    `json:"ts"`
	Signature string   `json:"sig"`
}

// Error codes of ErrorResponse.
const (
	ErrCodeBadRequest  = "bad_request"  // malformed, or a field failed validation
	ErrCodeTooLarge    = "too_large"    // over MaxWireSize
	ErrCodeVersion     = "version"      // unsupported wire version
	ErrCodeUnknownType = "unknown_type" // a type this side does not handle
	ErrCodeForbidden   = "forbidden"    // bad signature, stale timestamp, or client not allowed
	ErrCodeExhausted   = "exhausted"    // no tunnel addresses left
	ErrCodeInternal    = "internal"
	ErrCodeUnavailable = "unavailable" // the exit is starting, shutting down, or its queue is full: retry
	ErrCodeLimited     = "limited"     // an admission limit of the exit (sessions or requests per client)
	ErrCodeReplayed    = "replayed"    // a request the exit has already seen
	ErrCodeDraining    = "draining"    // the exit drains: it admits no session; the client tries another exit
)

// ErrorResponse answers a request that was refused. It changes no state on either side. A refusal
// of a request the exit could read is signed by the exit and bound to its session id and client;
// a client takes only such refusals as an answer (an unsigned one, e.g. for a message that could
// not be decoded, is dropped and counted).
type ErrorResponse struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	SessionID string `json:"session_id,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	ExitID    string `json:"exit_id,omitempty"` // the exit that refuses
	Nonce     string `json:"nonce,omitempty"`   // the ping's, for a refused ping
	// Certificate is the exit's operator certificate, as in SessionResponse.
	Certificate string `json:"cert,omitempty"`
	Signer      string `json:"signer,omitempty"`
	Timestamp   int64  `json:"ts,omitempty"`
	Signature   string `json:"sig,omitempty"`
}

// Exit discovery and drain (docs/pool.md). Exits announce themselves on signaling.AnnounceSubject
// at their cadence; a client that starts asks on signaling.DiscoverSubject and every exit answers
// with a fresh announcement. A draining exit tells each of its clients with SessionDraining.
const (
	TypeExitAnnouncement = "exit.announcement"
	TypeExitsDiscover    = "exits.discover"
	TypeSessionDraining  = "session.draining"
)

// States an exit announces.
const (
	ExitServing  = "serving"  // admits sessions
	ExitDraining = "draining" // admits none; its flows go on until its drain timeout
	ExitLeaving  = "leaving"  // its last word: the exit is gone (a goodbye to the directory)
)

// Limits of an announcement's free-form fields (signaling validates them).
const (
	MaxExitLabels     = 16
	MaxLabelKey       = 32
	MaxLabelValue     = 64
	MaxExitVersionLen = 64
)

// ExitLoad is what an exit carries when it announces.
type ExitLoad struct {
	Sessions int `json:"sessions"` // client sessions held
	Flows    int `json:"flows"`    // forwarded connections open
}

// ExitAnnouncement is an exit's signed statement of itself: who it is, where, with what labels,
// how loaded, and whether it admits sessions. The directory of a client engine keeps the newest one
// per exit (by Timestamp: an older one, replayed, changes nothing) and forgets an exit that misses
// three of its IntervalMS, says it is leaving, or fails verification. Signed by Identity.
type ExitAnnouncement struct {
	ExitID      string            `json:"exit_id"`
	Identity    string            `json:"identity"`         // the exit's ed25519 identity: it signs this, its responses and goodbyes
	Certificate string            `json:"cert,omitempty"`   // the exit's operator certificate, if it has one
	Endpoint    string            `json:"endpoint"`         // its WireGuard UDP endpoint, ip:port
	Labels      map[string]string `json:"labels,omitempty"` // from its configuration, e.g. region: eu
	Capacity    int               `json:"capacity"`         // client sessions it can hold at once (its free tunnel addresses and held sessions)
	Load        ExitLoad          `json:"load"`
	State       string            `json:"state"`       // ExitServing, ExitDraining or ExitLeaving
	Version     string            `json:"version"`     // the exit's software version
	IntervalMS  int64             `json:"interval_ms"` // its cadence: the next announcement is due within this
	Timestamp   int64             `json:"ts"`
	Signature   string            `json:"sig"`
}

// ExitsDiscover asks every exit for a fresh announcement, sent to the request's reply subject. It
// changes no state; exits answer a bounded number of them per second.
type ExitsDiscover struct {
	Nonce string `json:"nonce"` // 32 hex characters
}

// SessionDraining tells a client that the exit of its session drains: the exit admits no new
// session and ends the session's flows within DrainMS; the client should move its tunnel to another
// exit (make-before-break) and let its connections finish here. Sent by the exit to the client's
// events subject, signed by the exit identity that granted the session.
type SessionDraining struct {
	SessionID string `json:"session_id"`
	ExitID    string `json:"exit_id"`
	DrainMS   int64  `json:"drain_ms"` // until the exit ends the session's remaining flows
	Signer    string `json:"signer"`
	Timestamp int64  `json:"ts"`
	Signature string `json:"sig"`
}
