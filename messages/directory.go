package messages

import "time"

// ExitEntry is one live exit in a client engine's directory, as its newest verified announcement
// described it. Entries are immutable: an update replaces the entry.
type ExitEntry struct {
	ID          string
	Identity    string // verified, and trusted for ID by the engine's trust (pins, operators, any_exit)
	Certificate string
	Endpoint    string
	Labels      map[string]string // read only
	Capacity    int
	Load        ExitLoad
	State       string // ExitServing or ExitDraining (an exit that leaves is no longer listed)
	Version     string
	Interval    time.Duration // its announced cadence
	Announced   time.Time     // the newest announcement's timestamp
	Seen        time.Time     // when it arrived here
}

// Serving reports whether the exit admits new sessions.
func (e *ExitEntry) Serving() bool { return e.State == ExitServing }

// ExitDirectory is a client engine's directory of live exits at one moment, sorted by ID. Ready is
// false until the first discovery round (one request every exit answers) has finished.
type ExitDirectory struct {
	Exits []*ExitEntry
	Ready bool
	At    time.Time
}

// TunnelExitDraining tells a tunnel's steerer (TunnelConfig.Steer) that the exit of the tunnel's
// current session drains: it admits no new session and ends the session's flows within Drain. The
// steerer moves the tunnel (SwitchTunnel); the tunnel does not move itself.
type TunnelExitDraining struct {
	TunnelID, ExitID, SessionID string
	Drain                       time.Duration
	At                          time.Time
}
