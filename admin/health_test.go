package admin_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// TestHealthAndExit: /healthz answers while the engine does; /readyz waits for the configured
// tunnel and says what is missing; the exit's sessions; POST /v1/exit/drain returns once the exit
// has stopped, and /readyz then says so.
func TestHealthAndExit(t *testing.T) {
	eng := startEngine(t, "x", func(c *engine.Config) { c.Exit.DrainTimeout = engine.Duration(200 * time.Millisecond) })
	e := serve(t, eng, admin.Config{}, admin.Options{Configured: func() []string { return []string{"t1"} }})

	if h := decodeReply[admin.Health](t, e.do("GET", "/healthz", ""), http.StatusOK); !h.OK || len(h.Problems) != 0 {
		t.Fatalf("healthz: %+v", h)
	}
	r := e.do("GET", "/readyz", "")
	h := decodeReply[admin.Health](t, r, http.StatusServiceUnavailable)
	if h.OK || !slices.Equal(h.Problems, []string{"tunnel t1: not open"}) {
		t.Fatalf("readyz before t1: %+v", h)
	}
	decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", tunnelJSON("t1", "x")), http.StatusCreated)
	if h, err := e.c.Readyz(bounded(t)); err != nil || !h.OK {
		t.Fatalf("readyz with t1 up: %+v, %v", h, err)
	}

	xs, err := e.c.ExitSessions(bounded(t))
	if err != nil || xs.Exit.ID != "x" || !xs.Exit.Serving || len(xs.Sessions) != 1 || xs.Sessions[0].ClientID != eng.ClientID() ||
		len(xs.Sessions[0].Addresses) != 1 || xs.Sessions[0].Since.IsZero() {
		t.Fatalf("exit sessions: %+v, %v", xs, err)
	}

	x, err := e.c.DrainExit(bounded(t))
	if err != nil || x.ID != "x" || x.Serving || x.Sessions != 0 {
		t.Fatalf("drain: %+v, %v", x, err)
	}
	h, err = e.c.Readyz(bounded(t))
	if err != nil || h.OK || !slices.Contains(h.Problems, "exit x: not serving (drained)") {
		t.Fatalf("readyz after the drain: %+v, %v", h, err)
	}
	// The tunnel hears of its exit's drain over signaling, a moment after the drain returned.
	h = testutil.Poll(t, 5*time.Second, "readyz to mention t1, whose exit left", e.c.Readyz, func(h admin.Health) bool {
		return strings.Contains(strings.Join(h.Problems, "\n"), "tunnel t1: ")
	})
	st, err := e.c.Status(bounded(t))
	if err != nil || st.Exit == nil || st.Exit.Serving || st.Exit.Draining {
		t.Fatalf("status after the drain: %+v, %v", st, err)
	}
	// A second drain: nothing left to drain.
	if _, err := e.c.DrainExit(bounded(t)); err != nil {
		t.Fatalf("second drain: %v", err)
	}
}

// TestNoExit: on an engine without an exit, the exit endpoints answer 404 and the status says
// client.
func TestNoExit(t *testing.T) {
	eng := startEngine(t, "", func(c *engine.Config) { c.Exit = nil })
	e := serve(t, eng, admin.Config{}, admin.Options{})
	wantError(t, e.do("GET", "/v1/exit/sessions", ""), http.StatusNotFound, admin.CodeNotFound, "no exit")
	wantError(t, e.do("POST", "/v1/exit/drain", ""), http.StatusNotFound, admin.CodeNotFound, "no exit")
	st, err := e.c.Status(bounded(t))
	if err != nil || st.Role != "client" || st.Exit != nil {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if h, err := e.c.Readyz(bounded(t)); err != nil || !h.OK {
		t.Fatalf("readyz with nothing configured: %+v, %v", h, err)
	}
	// No exit anywhere: opening a tunnel fails (502) and leaves nothing.
	spec := `{"name": "t", "exit": "nowhere", "socks": "127.0.0.1:0", "udp_bind": "127.0.0.1", "handshake_timeout": "1s"}`
	wantError(t, e.do("POST", "/v1/tunnels", spec), http.StatusBadGateway, admin.CodeFailed, "nowhere")
	if ts, err := e.c.Tunnels(bounded(t)); err != nil || len(ts) != 0 {
		t.Fatalf("tunnels after a failed open: %+v, %v", ts, err)
	}
}
