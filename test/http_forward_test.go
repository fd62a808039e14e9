package test

// The HTTP proxy's plain-HTTP request loop through a real tunnel: keep-alive across origins with
// the connection's byte totals and one log line per request, and the end reasons of refusals
// (auth_failed, handshake_timeout, protocol_error).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// reqCapture keeps the "http request" and "proxy authentication failed" records and passes
// everything on to a logCapture.
type reqCapture struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
	next  slog.Handler
}

func newReqCapture(next *logCapture) *reqCapture {
	return &reqCapture{mu: &sync.Mutex{}, recs: &[]logRecord{}, next: next}
}

func (h *reqCapture) Enabled(context.Context, slog.Level) bool { return true }

func (h *reqCapture) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "http request" || r.Message == "proxy authentication failed" {
		rec := logRecord{"msg": slog.StringValue(r.Message), "level": slog.StringValue(r.Level.String())}
		for _, a := range h.attrs {
			rec[a.Key] = a.Value.Resolve()
		}
		r.Attrs(func(a slog.Attr) bool { rec[a.Key] = a.Value.Resolve(); return true })
		h.mu.Lock()
		*h.recs = append(*h.recs, rec)
		h.mu.Unlock()
	}
	return h.next.Handle(ctx, r)
}

func (h *reqCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &reqCapture{mu: h.mu, recs: h.recs, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...), next: h.next.WithAttrs(as)}
}

func (h *reqCapture) WithGroup(name string) slog.Handler {
	return &reqCapture{mu: h.mu, recs: h.recs, attrs: h.attrs, next: h.next.WithGroup(name)}
}

func (h *reqCapture) records(msg string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.recs {
		if r.str("msg") == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestHTTPForwardKeepAliveThroughTunnel: net/http's client keeps one proxy connection for plain
// requests to two origins; each request goes to its own origin through the tunnel, gets its own
// log line, and the connection ends normal on both sides with byte totals that are the sum of its
// requests'.
func TestHTTPForwardKeepAliveThroughTunnel(t *testing.T) {
	var originConns atomic.Int32
	mk := func(name string) *httptest.Server {
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Proxy-Authorization") != "" || r.Header.Get("Proxy-Connection") != "" {
				http.Error(w, "proxy headers reached the origin", 500)
				return
			}
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.Path, len(body))
		}))
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				originConns.Add(1)
			}
		}
		s.Start()
		t.Cleanup(s.Close)
		return s
	}
	a, b := mk("A"), mk("B")
	logs := newLogCapture()
	reqs := newReqCapture(logs)
	env := newConnEnv(t, "httpka", func(c *engine.Config) { c.Logger = slog.New(reqs) }, nil)
	u, _ := url.Parse("http://" + env.tun.HTTPAddr())
	tr := &http.Transport{Proxy: http.ProxyURL(u), MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	const n = 6
	for i := range n {
		srv, name := a, "A"
		if i%2 == 1 {
			srv, name = b, "B"
		}
		body := strings.Repeat("x", 1000*i)
		resp, err := c.Post(fmt.Sprintf("%s/r%d", srv.URL, i), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%s POST /r%d %d", name, i, len(body)); err != nil || string(got) != want {
			t.Fatalf("request %d: %q, %v; want %q", i, got, err, want)
		}
	}
	tr.CloseIdleConnections()
	st := env.tunnelStats(t, 1)
	wantEnds(t, "client", st, 1, endCounts{messages.EndNormal: 1}, endCounts{messages.EndNormal: 1})
	lines := poll(t, "a log line per request", func(context.Context) ([]logRecord, error) { return reqs.records("http request"), nil },
		func(r []logRecord) bool { return len(r) >= n })
	var in, out int64
	for i, l := range lines {
		port := a.Listener.Addr().(*net.TCPAddr).Port
		if i%2 == 1 {
			port = b.Listener.Addr().(*net.TCPAddr).Port
		}
		if l.str("method") != "POST" || l.int("status") != 200 || l.str("target") != fmt.Sprintf("127.0.0.1:%d", port) {
			t.Fatalf("log line %d: %v", i, l)
		}
		in, out = in+l.int("bytes_in"), out+l.int("bytes_out")
	}
	if st.Bytes.In != in || st.Bytes.Out != out || in == 0 || out == 0 {
		t.Fatalf("connection bytes in/out %d/%d, requests' %d/%d", st.Bytes.In, st.Bytes.Out, in, out)
	}
	// One upstream at a time: alternating origins means a new origin connection per request.
	if got := originConns.Load(); got != n {
		t.Fatalf("origins saw %d connections, want %d", got, n)
	}
}

// TestHTTPForwardEndReasons: a refused client ends with the reason of the refusal, whether at its
// first request or a later one on a keep-alive connection; failed authentication is logged at
// warn with the source.
func TestHTTPForwardEndReasons(t *testing.T) {
	origin := startServer(t, func(c *net.TCPConn, _ <-chan struct{}) {
		br := bufio.NewReader(c)
		for i := 0; i < 100; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	logs := newLogCapture()
	reqs := newReqCapture(logs)
	env := newConnEnv(t, "httpreasons", func(c *engine.Config) { c.Logger = slog.New(reqs) }, func(s *engine.TunnelSpec) {
		s.Auth = engine.ProxyAuth{Users: []engine.ProxyUser{{User: "u", Password: "pw"}}}
		s.Handshake = engine.HandshakeLimits{Timeout: engine.Duration(300 * time.Millisecond)}
	})
	good := "Proxy-Authorization: Basic dTpwdw==\r\n" // u:pw
	get := func(path, auth string) string {
		return fmt.Sprintf("GET http://%s%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", origin.Addr(), path, origin.Addr(), auth)
	}
	// exchange sends msgs one after the other on one connection, reading a response to each, and
	// returns the last status.
	exchange := func(addr string, msgs ...string) int {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(pollFor))
		br := bufio.NewReader(c)
		status := 0
		for _, m := range msgs {
			io.WriteString(c, m)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("after %q: %v", m, err)
			}
			io.Copy(io.Discard, resp.Body)
			status = resp.StatusCode
		}
		io.Copy(io.Discard, br) // the proxy ends the connection
		return status
	}
	base := env.tunnelStats(t, 0)
	cases := []struct {
		name string
		run  func() int
		want int
		why  messages.EndReason
	}{
		{"no-credentials", func() int { return exchange(env.tun.HTTPAddr(), get("/a", "")) }, 407, messages.EndAuthFailed},
		{"wrong-later", func() int {
			return exchange(env.tun.HTTPAddr(), get("/a", good), get("/b", "Proxy-Authorization: Basic dTp4\r\n"))
		}, 407, messages.EndAuthFailed},
		{"ambiguous-later", func() int {
			return exchange(env.tun.HTTPAddr(), get("/a", good),
				"POST http://"+origin.Addr()+"/s HTTP/1.1\r\n"+good+"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
		}, 400, messages.EndProtocolError},
		{"slow-head", func() int { return exchange(env.tun.HTTPAddr(), "GET http://"+origin.Addr()+"/ HTTP/1.1\r\nHo") }, 408, messages.EndHandshakeTimeout},
		{"socks5-wrong-password", func() int {
			sd, _ := xproxy.SOCKS5("tcp", env.tun.SOCKSAddr(), &xproxy.Auth{User: "u", Password: "nope"}, &net.Dialer{Timeout: pollFor})
			if c, err := sd.Dial("tcp", origin.Addr()); err == nil {
				c.Close()
				return 200
			}
			return 407
		}, 407, messages.EndAuthFailed},
	}
	prev := base
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
			cur := env.tunnelStats(t, prev.Ended+1)
			d := subStats(cur, prev)
			prev = cur
			wantEnds(t, "client", d, 1, endCounts{tc.why: 1}, endCounts{tc.why: 1})
		})
	}
	warns := reqs.records("proxy authentication failed")
	if len(warns) != 3 {
		t.Fatalf("%d authentication warnings, want 3: %v", len(warns), warns)
	}
	for _, w := range warns {
		if w.str("level") != "WARN" || !strings.HasPrefix(w.str("source"), "127.0.0.1:") || strings.Contains(w.str("err"), "nope") {
			t.Fatalf("warning %v", w)
		}
	}
}
