package admin_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger() *slog.Logger {
	if os.Getenv("WARREN_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startEngine starts an engine serving exit id on its private embedded NATS server (no listener),
// allowed to reach loopback; it is closed at the test's end.
func startEngine(t *testing.T, id string, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	cfg := engine.Config{Logger: testLogger(),
		Exit: &engine.ExitConfig{ID: id, Listen: "127.0.0.1:0", Egress: engine.EgressConfig{AllowLoopback: true}}}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatalf("engine.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("engine.Close: %v", err)
		}
		if n := e.ActorPanics(); n != 0 {
			t.Errorf("%d actor panics", n)
		}
	})
	return e
}

// env is an admin server on an engine, with a Client and a plain HTTP client for it.
type env struct {
	t     *testing.T
	eng   *engine.Engine
	srv   *admin.Server
	c     *admin.Client
	hc    *http.Client
	base  string
	token string
}

// serve starts an admin server on 127.0.0.1:0 for eng; it is closed at the test's end (before eng).
func serve(t *testing.T, eng *engine.Engine, cfg admin.Config, opts admin.Options) *env {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	opts.Engine = eng
	if opts.Version == "" {
		opts.Version = "v-test"
	}
	opts.Logger = testLogger()
	srv, err := admin.New(cfg, opts)
	if err != nil {
		t.Fatalf("admin.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("admin Start: %v", err)
	}
	tr := &http.Transport{Proxy: nil}
	e := &env{t: t, eng: eng, srv: srv, c: admin.NewClient(srv.Addr(), cfg.Token), hc: &http.Client{Transport: tr},
		base: "http://" + srv.Addr(), token: cfg.Token}
	t.Cleanup(func() {
		e.c.CloseIdleConnections()
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("admin Close: %v", err)
		}
	})
	return e
}

// reply is a raw HTTP reply.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request with the env's token (if any) and, for a body, Content-Type: application/json.
func (e *env) do(method, path, body string, header ...string) reply {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if method == http.MethodPost || method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

// wantError checks an error reply: its status, code, and that its message contains each of parts.
func wantError(t *testing.T, r reply, status int, code string, parts ...string) {
	t.Helper()
	var body struct {
		Error admin.Error `json:"error"`
	}
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if body.Error.Code != code {
		t.Fatalf("code %q, want %q: %s", body.Error.Code, code, r.body)
	}
	for _, p := range parts {
		if !strings.Contains(body.Error.Message, p) {
			t.Fatalf("message %q lacks %q", body.Error.Message, p)
		}
	}
}

// decodeReply decodes a 2xx reply.
func decodeReply[T any](t *testing.T, r reply, status int) T {
	t.Helper()
	var v T
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("reply %q: %v", r.body, err)
	}
	return v
}

// wantAPIError checks a Client error.
func wantAPIError(t *testing.T, err error, code string) *admin.Error {
	t.Helper()
	var ae *admin.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want *admin.Error %s", err, err, code)
	}
	if ae.Code != code {
		t.Fatalf("error code %q (%v), want %q", ae.Code, ae, code)
	}
	return ae
}

func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tunnelJSON is a tunnel spec on random loopback ports.
func tunnelJSON(name, exit string) string {
	return fmt.Sprintf(`{"name": %q, "exit": %q, "socks": "127.0.0.1:0", "http": "127.0.0.1:0", "udp_bind": "127.0.0.1"}`, name, exit)
}

// openSocks connects through a SOCKS5 proxy (no auth) to target, an IPv4 host:port.
func openSocks(t *testing.T, proxyAddr, target string) net.Conn {
	t.Helper()
	ap := netip.MustParseAddrPort(target)
	c, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	a := ap.Addr().As4()
	req := []byte{5, 1, 0, 5, 1, 0, 1, a[0], a[1], a[2], a[3], 0, 0}
	binary.BigEndian.PutUint16(req[11:], ap.Port())
	if _, err := c.Write(req); err != nil {
		c.Close()
		t.Fatal(err)
	}
	var rep [2 + 4 + 16 + 2]byte
	if _, err := io.ReadFull(c, rep[:6]); err != nil { // method reply, then the reply's head
		c.Close()
		t.Fatalf("socks5 reply: %v", err)
	}
	if rep[1] != 0 || rep[3] != 0 {
		c.Close()
		t.Fatalf("socks5 reply %x", rep[:6])
	}
	rest := 4 + 2
	if rep[5] == 4 {
		rest = 16 + 2
	}
	if _, err := io.ReadFull(c, rep[6:6+rest]); err != nil {
		c.Close()
		t.Fatalf("socks5 reply address: %v", err)
	}
	return c
}

// socksEcho connects through a SOCKS5 proxy to an echo server, writes payload, reads it back and
// closes.
func socksEcho(t *testing.T, proxyAddr, target string, payload []byte) {
	t.Helper()
	c := openSocks(t, proxyAddr, target)
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if string(got) != string(payload) {
		t.Fatal("echo: bytes differ")
	}
}
