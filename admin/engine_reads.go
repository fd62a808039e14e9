package admin

// What the admin server reads of the engine beyond its plain methods: the NATS status as the API
// shows it, and the start time.

import (
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/signaling"
)

// natsStatus is the engine's NATS connection ("in-process" for the embedded server).
func natsStatus(e *engine.Engine) NATSStatus {
	n := e.NATSStatus()
	if n.URL == signaling.InProcessURL {
		n.URL = "in-process"
	}
	return NATSStatus{Connected: n.Connected, URL: n.URL, LastError: n.LastError, Since: n.Since}
}

// startedAt is when the engine started (when the server was made, before Start).
func (s *Server) startedAt() time.Time {
	if t := s.eng.StartedAt(); !t.IsZero() {
		return t
	}
	return s.created
}
