package admin

// The JSON types of the admin API: what the server writes and the Client returns.

import (
	"maps"
	"net/netip"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// Status is GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// Role is "exit", "client" or "exit+client" (an exit that also runs tunnels or a pool).
	Role     string         `json:"role"`
	ClientID string         `json:"client_id"` // this engine's identity as exits see it
	NATS     NATSStatus     `json:"nats"`
	Exit     *ExitState     `json:"exit,omitempty"` // with an exit
	Tunnels  StateCounts    `json:"tunnels"`        // the engine's own tunnels (not pool slots), by state
	Pool     *PoolSummary   `json:"pool,omitempty"` // with a pool
	Conns    ConnectionsNow `json:"connections"`
	// Problems are what the engine noticed going wrong since start (actor panics, children lost,
	// events dropped), by name; absent when there were none.
	Problems map[string]int64 `json:"problems,omitempty"`
}

// NATSStatus is the engine's signaling connection.
type NATSStatus struct {
	Connected bool      `json:"connected"`
	URL       string    `json:"url"` // the server in use (passwords redacted); "in-process" for the embedded one
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"` // of the current state
}

// StateCounts counts things by state; Total is their sum.
type StateCounts struct {
	Total   int            `json:"total"`
	ByState map[string]int `json:"by_state"`
}

// PoolSummary is the pool in /v1/status.
type PoolSummary struct {
	Name  string      `json:"name"`
	Slots StateCounts `json:"slots"`
}

// ConnectionsNow are the active connections by role.
type ConnectionsNow struct {
	Client int `json:"client"` // proxied by this engine's tunnels (pool slots' included)
	Exit   int `json:"exit"`   // forwarded by this engine's exit
}

// ConnStats are a tunnel's (or slot's, or role's) connection counters.
type ConnStats struct {
	Active int    `json:"active"`
	Opened uint64 `json:"opened"`
	Ended  uint64 `json:"ended"`
	// BytesIn: proxy client → destination (incoming side to outgoing side); BytesOut: back: the
	// bytes delivered by ended connections and, so far, by active ones.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// Ends counts ended connections per side ("incoming", "outgoing") and end reason
	// (docs/connections.md); reasons with no connection are left out.
	Ends map[string]map[string]uint64 `json:"ends"`
}

func connStats(s messages.ConnectionStats) ConnStats {
	c := ConnStats{Active: s.Active, Opened: s.Opened, Ended: s.Ended, BytesIn: s.Bytes.In, BytesOut: s.Bytes.Out,
		Ends: map[string]map[string]uint64{}}
	for side, by := range s.ByEnd {
		for reason, n := range by {
			if n == 0 {
				continue
			}
			if c.Ends[string(side)] == nil {
				c.Ends[string(side)] = map[string]uint64{}
			}
			c.Ends[string(side)][string(reason)] = n
		}
	}
	return c
}

// Tunnel is one tunnel (GET /v1/tunnels/{name}, and the list of GET /v1/tunnels).
type Tunnel struct {
	Name    string   `json:"name"`
	State   string   `json:"state"`
	Cause   string   `json:"cause,omitempty"` // what its last transition said
	Exit    string   `json:"exit"`            // the exit of its current session
	Exits   []string `json:"exits,omitempty"` // failover list: configured exit first
	Session string   `json:"session,omitempty"`
	SOCKS   string   `json:"socks,omitempty"` // bound proxy addresses
	HTTP    string   `json:"http,omitempty"`
	// ExitEndpoint is the exit's WireGuard endpoint, ClientAddresses the tunnel's addresses.
	ExitEndpoint    string    `json:"exit_endpoint,omitempty"`
	ClientAddresses []string  `json:"client_addresses,omitempty"`
	OpenedAt        time.Time `json:"opened_at,omitzero"`
	UpSince         time.Time `json:"up_since,omitzero"`
	// AgeSeconds: since it opened (since it came up on its current exit when the engine does not
	// say when it opened).
	AgeSeconds    float64   `json:"age_seconds"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	Reconnects    int       `json:"reconnects"`
	Connections   ConnStats `json:"connections"`
}

func tunnelView(info engine.TunnelInfo, st messages.ConnectionStats, now time.Time) Tunnel {
	t := Tunnel{Name: info.ID, State: string(info.State), Cause: info.Cause, Exit: info.ExitID, Exits: info.Exits,
		Session: info.SessionID, SOCKS: info.SOCKSAddr, HTTP: info.HTTPAddr, OpenedAt: info.OpenedAt,
		UpSince: info.UpSince, LastHandshake: info.LastHandshake, Reconnects: info.Reconnects, Connections: connStats(st)}
	if info.ExitEndpoint.IsValid() {
		t.ExitEndpoint = info.ExitEndpoint.String()
	}
	t.ClientAddresses = addrStrings(info.ClientAddresses)
	since := info.OpenedAt
	if since.IsZero() {
		since = info.UpSince
	}
	if !since.IsZero() {
		t.AgeSeconds = seconds(now.Sub(since))
	}
	return t
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return float64(d.Milliseconds()) / 1000
}

// Connection is an active proxied connection (GET /v1/connections).
type Connection struct {
	Tunnel     string    `json:"tunnel"` // the tunnel's name (a pool slot's tunnel for pool connections)
	Slot       *int      `json:"slot,omitempty"`
	ID         uint64    `json:"id"`
	Kind       string    `json:"kind"` // socks5 or http
	Source     string    `json:"source"`
	Target     string    `json:"target"`
	Exit       string    `json:"exit"`
	Since      time.Time `json:"since"`
	AgeSeconds float64   `json:"age_seconds"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
}

// Exit is one exit of the directory (GET /v1/exits).
type Exit struct {
	ID              string            `json:"id"`
	State           string            `json:"state"` // serving or draining
	Identity        string            `json:"identity"`
	Endpoint        string            `json:"endpoint"`
	Labels          map[string]string `json:"labels,omitempty"`
	Capacity        int               `json:"capacity"`
	Sessions        int               `json:"sessions"`
	Flows           int               `json:"flows"`
	Version         string            `json:"version,omitempty"`
	Certified       bool              `json:"certified"` // it presented an operator certificate
	IntervalSeconds float64           `json:"interval_seconds"`
	Announced       time.Time         `json:"announced"`
	Seen            time.Time         `json:"seen"`
}

func exitView(e *engine.ExitEntry) Exit {
	return Exit{ID: e.ID, State: e.State, Identity: e.Identity, Endpoint: e.Endpoint, Labels: maps.Clone(e.Labels),
		Capacity: e.Capacity, Sessions: e.Load.Sessions, Flows: e.Load.Flows, Version: e.Version,
		Certified: e.Certificate != "", IntervalSeconds: e.Interval.Seconds(), Announced: e.Announced, Seen: e.Seen}
}

// Pool is GET /v1/pool (and the reply of PATCH /v1/pool).
type Pool struct {
	Name       string      `json:"name"`
	Size       int         `json:"size"`
	SOCKSPorts string      `json:"socks_ports,omitempty"`
	HTTPPorts  string      `json:"http_ports,omitempty"`
	Slots      []Slot      `json:"slots"`
	States     StateCounts `json:"states"`
}

// Slot is one pool slot.
type Slot struct {
	Index      int       `json:"index"`
	State      string    `json:"state"`
	Exit       string    `json:"exit"`
	SOCKS      string    `json:"socks,omitempty"`
	HTTP       string    `json:"http,omitempty"`
	UpSince    time.Time `json:"up_since,omitzero"`
	AgeSeconds float64   `json:"age_seconds"` // on its current exit
	RotateAt   time.Time `json:"rotate_at,omitzero"`
	Moves      int       `json:"moves"`
	Cause      string    `json:"cause,omitempty"`
	// Tunnel is its current tunnel's name and state ("" while it has none).
	Tunnel      string    `json:"tunnel,omitempty"`
	TunnelState string    `json:"tunnel_state,omitempty"`
	Reconnects  int       `json:"reconnects"`
	Connections ConnStats `json:"connections"` // its current tunnel's
}

func poolView(p *pool.Pool, slots []pool.SlotInfo, now time.Time) Pool {
	v := Pool{Name: p.Name(), Size: len(slots), Slots: make([]Slot, 0, len(slots)), States: slotCounts(slots)}
	if r := p.SOCKSPorts(); r.Count > 0 {
		v.SOCKSPorts = r.String()
	}
	if r := p.HTTPPorts(); r.Count > 0 {
		v.HTTPPorts = r.String()
	}
	for _, s := range slots {
		sl := Slot{Index: s.Index, State: string(s.State), Exit: s.Exit, SOCKS: s.SOCKSAddr, HTTP: s.HTTPAddr,
			UpSince: s.UpSince, RotateAt: s.RotateAt, Moves: s.Moves, Cause: s.Cause,
			Tunnel: s.Tunnel.ID, TunnelState: string(s.Tunnel.State), Reconnects: s.Tunnel.Reconnects,
			Connections: connStats(s.Stats)}
		if !s.UpSince.IsZero() {
			sl.AgeSeconds = seconds(now.Sub(s.UpSince))
		}
		v.Slots = append(v.Slots, sl)
	}
	return v
}

// slotStates and tunnelStates are every state, so that counts list zeros too.
var (
	slotStates = []messages.SlotState{messages.SlotWaiting, messages.SlotOpening, messages.SlotUp,
		messages.SlotMoving, messages.SlotReplacing, messages.SlotClosing}
	tunnelStates = []messages.TunnelState{messages.StateNegotiating, messages.StateHandshaking, messages.StateUp,
		messages.StateSwitching, messages.StateReconfiguring, messages.StateDraining, messages.StateDegraded,
		messages.StateReconnecting, messages.StateClosing, messages.StateClosed, messages.StateFailed}
)

func slotCounts(slots []pool.SlotInfo) StateCounts {
	c := StateCounts{Total: len(slots), ByState: map[string]int{}}
	for _, st := range slotStates {
		c.ByState[string(st)] = 0
	}
	for _, s := range slots {
		c.ByState[string(s.State)]++
	}
	return c
}

func tunnelCounts(infos []engine.TunnelInfo) StateCounts {
	c := StateCounts{Total: len(infos), ByState: map[string]int{}}
	for _, st := range tunnelStates {
		c.ByState[string(st)] = 0
	}
	for _, in := range infos {
		c.ByState[string(in.State)]++
	}
	return c
}

// RotateRequest is the body of POST /v1/pool/rotate: the slots to rotate (none: every slot that is up).
type RotateRequest struct {
	Slots []int `json:"slots,omitempty"`
}

// RotateResult answers POST /v1/pool/rotate.
type RotateResult struct {
	Moved  int           `json:"moved"`
	Failed int           `json:"failed"` // could not move (they stay where they were)
	Errors []SlotFailure `json:"errors,omitempty"`
}

// SlotFailure says why one slot asked for did not rotate.
type SlotFailure struct {
	Slot    int    `json:"slot"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ResizeRequest is the body of PATCH /v1/pool.
type ResizeRequest struct {
	Size *int `json:"size"`
}

// SwitchRequest is the body of POST /v1/tunnels/{name}/switch.
type SwitchRequest struct {
	Exit string `json:"exit"`
	// Drain is how long the old session's connections may finish ("5s"); empty: the tunnel's
	// drain_timeout; "0s": none.
	Drain string `json:"drain,omitempty"`
}

// ExitState is this engine's exit (in /v1/status, /v1/exit/sessions and POST /v1/exit/drain).
type ExitState struct {
	ID             string `json:"id"`
	Endpoint       string `json:"endpoint"`
	PublicKey      string `json:"public_key"`
	Serving        bool   `json:"serving"` // admits sessions
	Draining       bool   `json:"draining"`
	Sessions       int    `json:"sessions"`
	Pending        int    `json:"pending"`
	Clients        int    `json:"clients"`
	Flows          int    `json:"flows"`
	AddressesUsed  int    `json:"addresses_used"`
	AddressesTotal int    `json:"addresses_total"`
}

func exitState(x engine.ExitInfo, st engine.ExitStatus) *ExitState {
	return &ExitState{ID: x.ID, Endpoint: x.Endpoint.String(), PublicKey: x.PublicKey,
		// A stopped (drained) exit answers a zero status: no address pool at all.
		Serving: st.AddressesTotal > 0 && !st.Draining, Draining: st.Draining,
		Sessions: st.Sessions, Pending: st.Pending, Clients: st.Clients, Flows: st.Flows,
		AddressesUsed: st.AddressesUsed, AddressesTotal: st.AddressesTotal}
}

// ExitSessions is GET /v1/exit/sessions.
type ExitSessions struct {
	Exit     ExitState     `json:"exit"`
	Sessions []ExitSession `json:"sessions"`
}

// ExitSession is one client session of this engine's exit.
type ExitSession struct {
	ID         string    `json:"id"`
	ClientID   string    `json:"client_id"`
	Addresses  []string  `json:"addresses"`
	Since      time.Time `json:"since"`
	LastActive time.Time `json:"last_active"`
	Flows      int       `json:"flows"`
}

// Health is the body of /healthz and /readyz: OK, or the problems found.
type Health struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
}
