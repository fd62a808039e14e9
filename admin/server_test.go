package admin_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

const token = "s3cret-token-0123456789"

// TestConfigErrors: New refuses a bad config with an error naming the field, and binds nothing.
func TestConfigErrors(t *testing.T) {
	eng, err := engine.New(engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	empty, short, good := filepath.Join(dir, "empty"), filepath.Join(dir, "short"), filepath.Join(dir, "good")
	for f, s := range map[string]string{empty: " \n", short: "abc\n", good: token + "\n"} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		cfg         admin.Config
		field, text string
	}{
		{admin.Config{}, "admin.listen", "off"},
		{admin.Config{Listen: "9090"}, "admin.listen", "host:port"},
		{admin.Config{Listen: "127.0.0.1:http-admin"}, "admin.listen", "port"},
		{admin.Config{Listen: "0.0.0.0:9090"}, "admin.token", "not a loopback"},
		{admin.Config{Listen: ":9090"}, "admin.token", "not a loopback"},
		{admin.Config{Listen: "192.0.2.1:9090"}, "admin.token", "required"},
		{admin.Config{Listen: "0.0.0.0:9090", Token: "short"}, "admin.token", "at least 16"},
		{admin.Config{Listen: "127.0.0.1:9090", Token: "with space in the token"}, "admin.token", "printable"},
		{admin.Config{Listen: "127.0.0.1:9090", Token: token, TokenFile: good}, "admin.token", "not both"},
		{admin.Config{Listen: "0.0.0.0:9090", TokenFile: filepath.Join(dir, "missing")}, "admin.token_file", "no such file"},
		{admin.Config{Listen: "0.0.0.0:9090", TokenFile: empty}, "admin.token_file", "empty"},
		{admin.Config{Listen: "0.0.0.0:9090", TokenFile: short}, "admin.token_file", "at least 16"},
		{admin.Config{Listen: "127.0.0.1:9090", ReadyFraction: 1.5}, "admin.ready_fraction", "1.5"},
		{admin.Config{Listen: "127.0.0.1:9090", ReadyFraction: -0.1}, "admin.ready_fraction", "-0.1"},
	} {
		_, err := admin.New(tc.cfg, admin.Options{Engine: eng})
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%+v: error %v, want field %s mentioning %q", tc.cfg, err, tc.field, tc.text)
		}
		if !errors.Is(err, engine.ErrInvalidConfig) {
			t.Errorf("%+v: %v does not wrap ErrInvalidConfig", tc.cfg, err)
		}
	}
	for _, cfg := range []admin.Config{
		{Listen: "127.0.0.1:0"}, {Listen: "[::1]:0"}, {Listen: "localhost:0"},
		{Listen: "0.0.0.0:0", Token: token}, {Listen: "0.0.0.0:0", TokenFile: good}, {Listen: "127.0.0.1:0", ReadyFraction: 0.5},
	} {
		if _, err := admin.New(cfg, admin.Options{Engine: eng}); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	if _, err := admin.New(admin.Config{Listen: "127.0.0.1:0"}, admin.Options{}); err == nil {
		t.Error("New without an engine: no error")
	}
}

// TestLifecycle: Start binds (a port in use fails naming admin.listen), Close stops serving and is
// idempotent, a closed server does not start again; a server never started closes at once.
func TestLifecycle(t *testing.T) {
	eng, err := engine.New(engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(admin.Config{Listen: "127.0.0.1:0"}, admin.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != "" {
		t.Fatalf("Addr before Start: %q", srv.Addr())
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	if err := srv.Start(); err == nil {
		t.Fatal("second Start: no error")
	}
	busy, err := admin.New(admin.Config{Listen: addr}, admin.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Start(); err == nil || !strings.Contains(err.Error(), "admin.listen") {
		t.Fatalf("Start on a port in use: %v", err)
	}
	_ = busy.Close(context.Background())
	// An engine that is not started: /healthz says so (503), with the JSON body.
	c := admin.NewClient(addr, "")
	defer c.CloseIdleConnections()
	h, err := c.Healthz(bounded(t))
	if err != nil || h.OK || len(h.Problems) != 1 || !strings.Contains(h.Problems[0], "not started") {
		t.Fatalf("healthz of an engine not started: %+v, %v", h, err)
	}
	_, err = c.Status(bounded(t))
	wantAPIError(t, err, admin.CodeUnavailable)
	c.CloseIdleConnections()
	if err := srv.Close(bounded(t)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(bounded(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("the listener still accepts after Close")
	}
	if err := srv.Start(); !errors.Is(err, admin.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	never, _ := admin.New(admin.Config{Listen: "127.0.0.1:0"}, admin.Options{Engine: eng})
	if err := never.Close(bounded(t)); err != nil {
		t.Fatal(err)
	}
}

// TestAuth: with a token, every path wants it (401 with a WWW-Authenticate challenge: Basic for
// the status page, Bearer elsewhere); the bearer token opens them; HTTP Basic with the token as the
// password opens reads only.
func TestAuth(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{Token: token}, admin.Options{})
	paths := []string{"/", "/healthz", "/readyz", "/metrics", "/v1/status", "/v1/tunnels", "/v1/tunnels/nope",
		"/v1/connections", "/v1/exits", "/v1/pool", "/v1/exit/sessions", "/nowhere"}
	for _, p := range paths {
		r := e.do("GET", p, "", "Authorization", "")
		wantError(t, r, http.StatusUnauthorized, admin.CodeUnauthorized)
		want := "Bearer"
		if p == "/" {
			want = "Basic"
		}
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, want) {
			t.Errorf("GET %s: WWW-Authenticate %q, want %s", p, ch, want)
		}
		wantError(t, e.do("GET", p, "", "Authorization", "Bearer "+token+"x"), http.StatusUnauthorized, admin.CodeUnauthorized)
		wantError(t, e.do("GET", p, "", "Authorization", "Bearer "), http.StatusUnauthorized, admin.CodeUnauthorized)
	}
	for _, m := range []struct{ method, path, body string }{
		{"POST", "/v1/tunnels", tunnelJSON("t", "x")}, {"DELETE", "/v1/tunnels/t", ""}, {"POST", "/v1/exit/drain", "{}"},
		{"PATCH", "/v1/pool", `{"size": 1}`}, {"POST", "/v1/reload", ""},
	} {
		wantError(t, e.do(m.method, m.path, m.body, "Authorization", ""), http.StatusUnauthorized, admin.CodeUnauthorized)
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+token))
		wantError(t, e.do(m.method, m.path, m.body, "Authorization", basic), http.StatusUnauthorized, admin.CodeUnauthorized)
	}
	if r := e.do("GET", "/v1/status", ""); r.status != http.StatusOK {
		t.Fatalf("with the token: %s", r)
	}
	for _, user := range []string{"admin", ""} {
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+token))
		if r := e.do("GET", "/", "", "Authorization", basic); r.status != http.StatusOK {
			t.Fatalf("status page with Basic: %d", r.status)
		}
	}
	// The Client with a wrong token gets an *admin.Error.
	bad := admin.NewClient(e.srv.Addr(), "wrong-token-wrong-token")
	defer bad.CloseIdleConnections()
	_, err := bad.Status(bounded(t))
	if ae := wantAPIError(t, err, admin.CodeUnauthorized); ae.Status != http.StatusUnauthorized {
		t.Fatalf("status %d", ae.Status)
	}
	if _, err := e.c.Status(bounded(t)); err != nil {
		t.Fatal(err)
	}
}

// TestRequestErrors: unknown paths and methods, bodies without a JSON content type, oversize or
// malformed, and (without a token) a Host header that is not loopback.
func TestRequestErrors(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{})
	wantError(t, e.do("GET", "/v2/status", ""), http.StatusNotFound, admin.CodeNotFound, "/v2/status")
	r := e.do("PUT", "/v1/tunnels", "{}")
	wantError(t, r, http.StatusMethodNotAllowed, admin.CodeMethodNotAllowed)
	if a := r.header.Get("Allow"); a != "GET, POST, HEAD" {
		t.Errorf("Allow %q", a)
	}
	wantError(t, e.do("POST", "/v1/status", "{}"), http.StatusMethodNotAllowed, admin.CodeMethodNotAllowed)
	wantError(t, e.do("DELETE", "/v1/tunnels", ""), http.StatusMethodNotAllowed, admin.CodeMethodNotAllowed)
	wantError(t, e.do("POST", "/v1/tunnels", tunnelJSON("t", "x"), "Content-Type", "text/plain"),
		http.StatusUnsupportedMediaType, admin.CodeUnsupportedMedia)
	wantError(t, e.do("POST", "/v1/tunnels", tunnelJSON("t", "x"), "Content-Type", ""),
		http.StatusUnsupportedMediaType, admin.CodeUnsupportedMedia)
	wantError(t, e.do("POST", "/v1/tunnels", `{"name": "`+strings.Repeat("a", 70<<10)+`"}`),
		http.StatusRequestEntityTooLarge, admin.CodeTooLarge)
	wantError(t, e.do("POST", "/v1/tunnels", `{"name": `), http.StatusBadRequest, admin.CodeBadRequest, "body")
	wantError(t, e.do("POST", "/v1/tunnels", `{"name": "a"} {"name": "b"}`), http.StatusBadRequest, admin.CodeBadRequest, "more than one")
	wantError(t, e.do("POST", "/v1/tunnels", ""), http.StatusBadRequest, admin.CodeBadRequest, "empty")
	wantError(t, e.do("GET", "/v1/status", "", "Host", "rebound.example:9090"), http.StatusForbidden, admin.CodeForbidden)
	if r := e.do("GET", "/v1/status", "", "Host", "localhost:9090"); r.status != http.StatusOK {
		t.Fatalf("Host localhost: %s", r)
	}
	wantError(t, e.do("POST", "/v1/reload", ""), http.StatusNotImplemented, admin.CodeNotImplemented)
	wantError(t, e.do("POST", "/v1/tunnels/t/reconnect", `{"now": true}`), http.StatusBadRequest, admin.CodeBadRequest, "body.now")
	wantError(t, e.do("DELETE", "/v1/tunnels/t?drain=soon", ""), http.StatusBadRequest, admin.CodeBadRequest, "drain")
	wantError(t, e.do("POST", "/v1/tunnels/t/switch?timeout=2h", `{"exit": "y"}`), http.StatusBadRequest, admin.CodeBadRequest, "timeout")
}

// TestReload: POST /v1/reload calls Options.Reload and answers its result; a config error is a
// 400 naming the field.
func TestReload(t *testing.T) {
	eng := startEngine(t, "x", nil)
	var fail atomic.Bool
	e := serve(t, eng, admin.Config{}, admin.Options{Reload: func(context.Context) (admin.ReloadResult, error) {
		if fail.Load() {
			return admin.ReloadResult{}, &engine.FieldError{Field: "tunnels[1].socks", Err: errors.New("bad address")}
		}
		return admin.ReloadResult{Opened: []string{"b"}, Closed: []string{"a"}, Unchanged: 2}, nil
	}})
	res, err := e.c.Reload(bounded(t))
	if err != nil || len(res.Opened) != 1 || res.Opened[0] != "b" || res.Closed[0] != "a" || res.Unchanged != 2 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	fail.Store(true)
	_, err = e.c.Reload(bounded(t))
	if ae := wantAPIError(t, err, admin.CodeBadRequest); !strings.Contains(ae.Message, "tunnels[1].socks") {
		t.Fatalf("reload error %q does not name the field", ae.Message)
	}
}

// TestCloseWaitsForHandlers: Close with a short context while a DELETE drains a tunnel that has
// an open connection: the drain is cut short, the connection ends, and Close returns only once
// the handler has (goleak checks that nothing is left behind).
func TestCloseWaitsForHandlers(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{})
	tun := decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", tunnelJSON("t", "x")), http.StatusCreated)
	echo := testutil.EchoServer(t)
	conn := openSocks(t, tun.SOCKS, echo.Addr())
	defer conn.Close()
	deleted := make(chan error, 1)
	go func() { deleted <- e.c.CloseTunnel(context.Background(), "t", time.Minute) }()
	testutil.Poll(t, 10*time.Second, "the tunnel to drain", func(ctx context.Context) (admin.Tunnel, error) {
		return e.c.Tunnel(ctx, "t")
	}, func(v admin.Tunnel) bool { return v.State == "draining" })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.srv.Close(ctx); err == nil {
		t.Fatal("Close with a drain in progress and a short context: no error")
	}
	t.Logf("Close took %v", time.Since(start))
	if err := testutil.Await(t, deleted, 10*time.Second, "the DELETE to end"); err == nil {
		t.Fatal("DELETE cut short by Close: no error")
	}
	// The drain was cut short: the connection was ended.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection is still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection is still open after the close")
	}
}
