package admin_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// TestTunnelsAPI drives one engine (an exit and its own tunnels on a private bus) through the
// API: status, open with POST (201, Location, name in use 409), list, get, reconnect, close with
// a drain, and the errors of each.
func TestTunnelsAPI(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{})

	st := decodeReply[admin.Status](t, e.do("GET", "/v1/status", ""), http.StatusOK)
	if st.Role != "exit" || st.Version != "v-test" || !st.NATS.Connected || st.Exit == nil || !st.Exit.Serving ||
		st.Exit.ID != "x" || st.Tunnels.Total != 0 || st.ClientID != eng.ClientID() {
		t.Fatalf("status: %+v", st)
	}

	r := e.do("POST", "/v1/tunnels", tunnelJSON("t1", "x"))
	t1 := decodeReply[admin.Tunnel](t, r, http.StatusCreated)
	if t1.Name != "t1" || t1.State != "up" || t1.Exit != "x" || t1.SOCKS == "" || t1.HTTP == "" || t1.Session == "" ||
		len(t1.ClientAddresses) != 1 || t1.ExitEndpoint == "" || t1.UpSince.IsZero() {
		t.Fatalf("opened: %+v", t1)
	}
	if loc := r.header.Get("Location"); loc != "/v1/tunnels/t1" {
		t.Fatalf("Location %q", loc)
	}
	wantError(t, e.do("POST", "/v1/tunnels", tunnelJSON("t1", "x")), http.StatusConflict, admin.CodeConflict, "t1")

	// The Client opens a second one from an engine.TunnelSpec.
	t2, err := e.c.OpenTunnel(bounded(t), engine.TunnelSpec{Name: "t2", Exit: "x", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
		HandshakeTimeout: engine.Duration(5 * time.Second), Connections: engine.ConnLimits{IdleExempt: []string{"*:22"}}})
	if err != nil || t2.Name != "t2" || t2.State != "up" || t2.HTTP != "" {
		t.Fatalf("Client.OpenTunnel: %+v, %v", t2, err)
	}

	list, err := e.c.Tunnels(bounded(t))
	if err != nil || len(list) != 2 || list[0].Name != "t1" || list[1].Name != "t2" {
		t.Fatalf("Tunnels: %+v, %v", list, err)
	}
	got, err := e.c.Tunnel(bounded(t), "t1")
	if err != nil || got.Name != "t1" || got.Session != t1.Session || got.State != "up" {
		t.Fatalf("Tunnel t1: %+v, %v", got, err)
	}
	st, err = e.c.Status(bounded(t))
	if err != nil || st.Role != "exit+client" || st.Tunnels.Total != 2 || st.Tunnels.ByState["up"] != 2 || st.Exit.Sessions != 2 {
		t.Fatalf("status with two tunnels: %+v, %v", st, err)
	}

	// Errors: unknown tunnel, bad bodies naming the field.
	_, err = e.c.Tunnel(bounded(t), "nope")
	wantAPIError(t, err, admin.CodeNotFound)
	wantError(t, e.do("GET", "/v1/tunnels/nope", ""), http.StatusNotFound, admin.CodeNotFound, "nope")
	wantError(t, e.do("DELETE", "/v1/tunnels/nope", ""), http.StatusNotFound, admin.CodeNotFound)
	wantError(t, e.do("POST", "/v1/tunnels/nope/reconnect", ""), http.StatusNotFound, admin.CodeNotFound)
	wantError(t, e.do("POST", "/v1/tunnels/nope/switch", `{"exit": "x"}`), http.StatusNotFound, admin.CodeNotFound)
	for body, parts := range map[string][]string{
		`{"name": "t3", "exit": "x", "sock": "127.0.0.1:0"}`:                                        {"sock", "unknown field"},
		`{"name": "t3", "exit": "x", "socks": "nonsense"}`:                                          {"tunnel.socks"},
		`{"name": "t3", "exit": 5, "socks": "127.0.0.1:0"}`:                                         {"body.exit"},
		`{"name": "t3", "exit": "x", "socks": "127.0.0.1:0", "handshake_timeout": 10}`:              {"body.handshake_timeout"},
		`{"name": "t3", "exit": "x", "socks": "127.0.0.1:0", "handshake_timeout": "ten"}`:           {"handshake_timeout"},
		`{"name": "t3", "exit": "x", "socks": "127.0.0.1:0", "connections": {"idle_timeout": "x"}}`: {"idle_timeout"},
		`{"name": "t3", "exit": "x", "socks": "127.0.0.1:0", "health": {"failures": "3"}}`:          {"body.health.failures"},
		`{"name": "t3", "socks": "127.0.0.1:0"}`:                                                    {"tunnel.exit"},
		`["t3"]`:                                                                                    {"body"},
	} {
		wantError(t, e.do("POST", "/v1/tunnels", body), http.StatusBadRequest, admin.CodeBadRequest, parts...)
	}
	wantError(t, e.do("POST", "/v1/tunnels/t1/switch", `{}`), http.StatusBadRequest, admin.CodeBadRequest, "body.exit")
	wantError(t, e.do("POST", "/v1/tunnels/t1/switch", `{"exit": "x", "drain": "later"}`), http.StatusBadRequest, admin.CodeBadRequest, "body.drain")

	// Reconnect renews the session with the same exit.
	re, err := e.c.ReconnectTunnel(bounded(t), "t1")
	if err != nil || re.State != "up" || re.Exit != "x" || re.Session == t1.Session || re.SOCKS != t1.SOCKS {
		t.Fatalf("reconnect: %+v (was session %s), %v", re, t1.Session, err)
	}

	// Close with a drain (DELETE ?drain=), then it is gone.
	r = e.do("DELETE", "/v1/tunnels/t1?drain=1s", "")
	if closed := decodeReply[admin.Tunnel](t, r, http.StatusOK); closed.Name != "t1" || closed.State != "closed" {
		t.Fatalf("closed: %+v", closed)
	}
	wantError(t, e.do("GET", "/v1/tunnels/t1", ""), http.StatusNotFound, admin.CodeNotFound)
	if err := e.c.CloseTunnel(bounded(t), "t2", 0); err != nil {
		t.Fatalf("Client.CloseTunnel: %v", err)
	}
	err = e.c.CloseTunnel(bounded(t), "t2", -1)
	wantAPIError(t, err, admin.CodeNotFound)
	list, err = e.c.Tunnels(bounded(t))
	if err != nil || len(list) != 0 {
		t.Fatalf("Tunnels after closing both: %+v, %v", list, err)
	}
	testutil.Eventually(t, 10*time.Second, "the exit to release both sessions", func() bool {
		st, err := e.c.Status(bounded(t))
		return err == nil && st.Exit.Sessions == 0 && st.Role == "exit"
	})
}

// TestSwitchAPI: POST /v1/tunnels/{name}/switch moves a tunnel to a second exit (another engine on
// the first one's NATS server), and a switch to an exit that is not there fails (502) leaving it
// Up where it was.
func TestSwitchAPI(t *testing.T) {
	a := startEngine(t, "a", func(c *engine.Config) {
		c.NATS.EmbeddedListen = "127.0.0.1:0"
		c.Trust.AnyExit, c.Exit.Open = true, true
	})
	startEngine(t, "b", func(c *engine.Config) {
		c.NATS.URLs = []string{a.NATSURL()}
		c.Trust.AnyExit, c.Exit.Open = true, true
	})
	e := serve(t, a, admin.Config{}, admin.Options{})
	spec := `{"name": "t", "exit": "a", "socks": "127.0.0.1:0", "udp_bind": "127.0.0.1", "handshake_timeout": "3s"}`
	tun := decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", spec), http.StatusCreated)
	sw, err := e.c.SwitchTunnel(bounded(t), "t", "b", 0)
	if err != nil || sw.Exit != "b" || sw.State != "up" || sw.SOCKS != tun.SOCKS || sw.Session == tun.Session {
		t.Fatalf("switch to b: %+v, %v", sw, err)
	}
	r := e.do("POST", "/v1/tunnels/t/switch", `{"exit": "nowhere", "drain": "0s"}`)
	wantError(t, r, http.StatusBadGateway, admin.CodeFailed, "nowhere")
	after, err := e.c.Tunnel(bounded(t), "t")
	if err != nil || after.Exit != "b" || after.State != "up" {
		t.Fatalf("after a failed switch: %+v, %v", after, err)
	}
	exits, err := e.c.Exits(bounded(t))
	if err != nil || len(exits) != 2 || exits[0].ID != "a" || exits[1].ID != "b" || exits[0].State != "serving" {
		t.Fatalf("exits: %+v, %v", exits, err)
	}
	if !strings.HasPrefix(exits[1].Endpoint, "127.0.0.1:") || exits[1].Identity == "" || exits[1].IntervalSeconds <= 0 {
		t.Fatalf("exit b: %+v", exits[1])
	}
}

// TestConnectionsAPI: GET /v1/connections lists the active connections, of one tunnel or of all.
func TestConnectionsAPI(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{})
	tun := decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", tunnelJSON("t", "x")), http.StatusCreated)
	if cs, err := e.c.Connections(bounded(t), ""); err != nil || len(cs) != 0 {
		t.Fatalf("connections before any: %+v, %v", cs, err)
	}
	_, err := e.c.Connections(bounded(t), "nope")
	wantAPIError(t, err, admin.CodeNotFound)
	echo := testutil.EchoServer(t)
	conn := openSocks(t, tun.SOCKS, echo.Addr())
	defer conn.Close()
	cs := testutil.Poll(t, 10*time.Second, "one connection listed", func(ctx context.Context) ([]admin.Connection, error) {
		return e.c.Connections(ctx, "t")
	}, func(cs []admin.Connection) bool { return len(cs) == 1 })
	if cs[0].Tunnel != "t" || cs[0].Kind != "socks5" || cs[0].Target != echo.Addr() || cs[0].Exit != "x" ||
		cs[0].Source != conn.LocalAddr().String() || cs[0].Slot != nil {
		t.Fatalf("connection: %+v", cs[0])
	}
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	all := testutil.Poll(t, 10*time.Second, "its bytes so far", func(ctx context.Context) ([]admin.Connection, error) {
		return e.c.Connections(ctx, "")
	}, func(cs []admin.Connection) bool { return len(cs) == 1 && cs[0].BytesIn == 5 && cs[0].BytesOut == 5 })
	if all[0].ID != cs[0].ID {
		t.Fatalf("all connections: %+v", all)
	}
}
