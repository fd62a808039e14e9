package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// recOrigin is a real HTTP/1.1 origin on 127.0.0.1 that records the raw bytes each connection
// brought, and answers each request with "METHOD request-target" as its body (or as answer says).
type recOrigin struct {
	srv    *testutil.Server
	conns  chan []byte // the raw bytes of each connection, once it has ended
	answer func(c net.Conn, br *bufio.Reader, req *http.Request) (keep bool)
}

func startOrigin(t testing.TB, answer func(c net.Conn, br *bufio.Reader, req *http.Request) bool) *recOrigin {
	t.Helper()
	o := &recOrigin{conns: make(chan []byte, 64), answer: answer}
	o.srv = testutil.Serve(t, func(c *net.TCPConn, _ <-chan struct{}) { o.serve(c) })
	return o
}

func (o *recOrigin) serve(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(testTimeout))
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for i := 0; i < 1000; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			break
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			break
		}
		keep := !req.Close
		if o.answer != nil {
			keep = o.answer(c, br, req) && keep
		} else {
			body := req.Method + " " + req.RequestURI
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		if !keep {
			break
		}
	}
	c.CloseWrite()
	io.Copy(io.Discard, br) // what came after the last answered request is recorded too
	o.conns <- raw.Bytes()
}

func (o *recOrigin) port(t testing.TB) int { return int(o.srv.Port()) }

// next returns the raw bytes of the next connection that ended.
func (o *recOrigin) next(t testing.TB) string {
	t.Helper()
	return string(testutil.Await(t, o.conns, testTimeout, "an origin connection to end"))
}

// none checks that no connection reached the origin (after the proxy side is done).
func (o *recOrigin) none(t testing.TB) {
	t.Helper()
	select {
	case b := <-o.conns:
		t.Fatalf("the origin got a connection with %q", b)
	default:
	}
}

// readResp reads one response from br and its body.
func readResp(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, string(b)
}

// finishKeepalive half-closes the client's side of a keep-alive session: the proxy closes the
// connection, the forward ends without an error, and the origin received exactly want.
func finishKeepalive(t testing.TB, c *net.TCPConn, br *bufio.Reader, h *harness, o *recOrigin, want string) {
	t.Helper()
	c.CloseWrite()
	expectClosed(t, c, br)
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	if got := o.next(t); got != want {
		t.Fatalf("origin got %d bytes, want %d:\n%q", len(got), len(want), got)
	}
}

// expectClosed checks the proxy closed the connection: nothing more, then EOF; then the client
// closes its side too, as clients do.
func expectClosed(t testing.TB, c *net.TCPConn, br *bufio.Reader) {
	t.Helper()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the response: %q, %v; want EOF", rest, err)
	}
	c.CloseWrite()
}

// requestLog collects OnRequest calls.
type requestLog struct {
	mu   sync.Mutex
	reqs []RequestLog
}

func (l *requestLog) add(r RequestLog) { l.mu.Lock(); l.reqs = append(l.reqs, r); l.mu.Unlock() }

func (l *requestLog) all() []RequestLog {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]RequestLog(nil), l.reqs...)
}

// TestForwardTwoOrigins: on one client connection, a request to A, then B, then A again reaches A,
// B and A (on a new connection: one upstream at a time), each rewritten to origin form with its
// own Host and without Proxy-Authorization; every request is checked for credentials and logged.
func TestForwardTwoOrigins(t *testing.T) {
	a, b := startOrigin(t, nil), startOrigin(t, nil)
	d := &dialer{hosts: map[string]string{"a.test": "127.0.0.1", "b.test": "127.0.0.1"}}
	var log requestLog
	opts := Options{Auth: AuthFunc(func(u, p string) bool { return u == "u" && p == "pw" }), OnRequest: log.add}
	h := startHarness(t, &harness{kind: HTTP, dial: d.dial, opts: opts})
	c := dialTCP(t, h.addr())
	br := bufio.NewReader(c)
	pa, pb := strconv.Itoa(a.port(t)), strconv.Itoa(b.port(t))
	const auth = "Proxy-Authorization: Basic dTpwdw==\r\n" // u:pw
	for i, r := range []struct{ host, path string }{{"a.test:" + pa, "/a1"}, {"b.test:" + pb, "/b1?x=1"}, {"a.test:" + pa, "/a2"}} {
		fmt.Fprintf(c, "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n%sUser-Agent: t/1\r\nX-N: %d\r\n\r\n", r.host, r.path, r.host, auth, i)
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != "GET "+r.path || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	c.CloseWrite()
	expectClosed(t, c, br)
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	want := func(host, path string, n int) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: t/1\r\nX-N: %d\r\n\r\n", path, host, n)
	}
	// A's two connections are recorded as each ends, which the scheduler may order either way.
	a1, a2 := a.next(t), a.next(t)
	if a1 > a2 {
		a1, a2 = a2, a1
	}
	if a1 != want("a.test:"+pa, "/a1", 0) || a2 != want("a.test:"+pa, "/a2", 2) {
		t.Fatalf("A's connections got %q and %q", a1, a2)
	}
	if got := b.next(t); got != want("b.test:"+pb, "/b1?x=1", 1) {
		t.Fatalf("B got %q", got)
	}
	r := h.result(t)
	if r.err != nil || !r.s.Forward || r.s.Target != (Target{"a.test", uint16(a.port(t))}) {
		t.Fatalf("handshake %+v", r)
	}
	logs := log.all()
	if len(logs) != 3 {
		t.Fatalf("%d request logs: %+v", len(logs), logs)
	}
	for i, l := range logs {
		host := "a.test"
		if i == 1 {
			host = "b.test"
		}
		if l.Method != "GET" || l.Target.Host != host || l.Status != 200 || l.Err != nil || l.BytesIn == 0 || l.BytesOut == 0 {
			t.Fatalf("log %d: %+v", i, l)
		}
	}
	if got := len(d.seen()); got != 3 {
		t.Fatalf("%d dials, want 3", got)
	}
}

// TestForwardKeepAliveNetHTTP: net/http's client with keep-alive through the proxy: GETs and
// POSTs (sized and chunked) share one client connection and one origin connection.
func TestForwardKeepAliveNetHTTP(t *testing.T) {
	var originConns atomic.Int32
	origin := httptest.NewUnstartedServer(originMux())
	origin.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			originConns.Add(1)
		}
	}
	origin.Start()
	defer origin.Close()
	d := &dialer{hosts: map[string]string{"example.test": "127.0.0.1"}}
	h := startProxy(t, HTTP, d.dial)
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr()}), MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: testTimeout}
	base := "http://example.test:" + strconv.Itoa(origin.Listener.Addr().(*net.TCPAddr).Port)
	for i := range 10 {
		if b := get(t, c, base+"/download"); sha256.Sum256(b) != sha256.Sum256(downData) {
			t.Fatalf("download %d: sha256 differs", i)
		}
		upload(t, c, base+"/upload", i%2 == 1, i%3 == 2)
	}
	tr.CloseIdleConnections()
	r := h.result(t)
	if r.err != nil || !r.s.Forward {
		t.Fatalf("handshake %+v", r)
	}
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-h.results:
		t.Fatalf("a second client connection: %+v", r)
	default:
	}
	if n := originConns.Load(); n != 1 {
		t.Fatalf("origin saw %d connections, want 1", n)
	}
}

// TestForwardPythonLike100: 100 requests on one keep-alive connection, the way Python's
// http.client sends them (explicit Connection: keep-alive, identity encoding), one after the
// other and then all pipelined at once: every one is answered, in order, over one origin connection.
func TestForwardPythonLike100(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(map[bool]string{false: "sequential", true: "pipelined"}[pipelined], func(t *testing.T) {
			o := startOrigin(t, nil)
			h := startProxy(t, HTTP, (&dialer{}).dial)
			c := dialTCP(t, h.addr())
			br := bufio.NewReader(c)
			host := "127.0.0.1:" + strconv.Itoa(o.port(t))
			req := func(i int) string {
				return fmt.Sprintf("GET http://%s/item/%d HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n", host, i, host)
			}
			var all strings.Builder
			for i := range 100 {
				if pipelined {
					all.WriteString(req(i))
					continue
				}
				io.WriteString(c, req(i))
				if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != fmt.Sprintf("GET /item/%d", i) {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
			}
			if pipelined {
				io.WriteString(c, all.String())
				for i := range 100 {
					if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != fmt.Sprintf("GET /item/%d", i) {
						t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
					}
				}
			}
			var want strings.Builder
			for i := range 100 {
				fmt.Fprintf(&want, "GET /item/%d HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\n\r\n", i, host)
			}
			finishKeepalive(t, c, br, h, o, want.String())
			o.none(t)
		})
	}
}

// smuggling are requests whose framing or syntax is ambiguous, with the status each must get.
var smuggling = []struct {
	name, head string
	status     int
}{
	{"cl-then-te", "POST http://HOST/s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"te-then-cl", "POST http://HOST/s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
	{"differing-cl", "POST http://HOST/s HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
	{"te-gzip", "POST http://HOST/s HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabcd", 400},
	{"te-chunked-gzip", "POST http://HOST/s HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
	{"te-twice", "POST http://HOST/s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"te-http10", "POST http://HOST/s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"obs-fold", "GET http://HOST/s HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400},
	{"obs-fold-tab", "GET http://HOST/s HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400},
	{"space-before-colon", "GET http://HOST/s HTTP/1.1\r\nHost : x\r\n\r\n", 400},
	{"space-before-colon-cl", "POST http://HOST/s HTTP/1.1\r\nContent-Length : 4\r\n\r\nabcd", 400},
	{"space-in-name", "GET http://HOST/s HTTP/1.1\r\nX A: b\r\n\r\n", 400},
	{"http-9.9", "GET http://HOST/s HTTP/9.9\r\n\r\n", 505},
	{"http-2.0", "GET http://HOST/s HTTP/2.0\r\n\r\n", 505},
	{"http-0.9", "GET http://HOST/s HTTP/0.9\r\n\r\n", 505},
	{"http-1.2", "GET http://HOST/s HTTP/1.2\r\n\r\n", 505},
}

// TestForwardRefusesAmbiguous: each ambiguous request is refused with its status and the
// connection closed — as the first request (nothing dialled) and after a good one on a
// keep-alive connection (the origin got the good request, byte for byte, and nothing else).
func TestForwardRefusesAmbiguous(t *testing.T) {
	o := startOrigin(t, nil)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	good := "GET http://" + host + "/good HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	wantGood := "GET /good HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	d := &dialer{}
	var log requestLog
	h := startHarness(t, &harness{kind: HTTP, dial: d.dial, opts: Options{OnRequest: log.add}})
	for _, tc := range smuggling {
		bad := strings.ReplaceAll(tc.head, "HOST", host)
		t.Run(tc.name+"/first", func(t *testing.T) {
			before := len(d.seen())
			c := dialTCP(t, h.addr())
			io.WriteString(c, bad)
			br := bufio.NewReader(c)
			if resp, _ := readResp(t, br, "GET"); resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d close=%v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			expectClosed(t, c, br)
			if r := h.result(t); !errors.Is(r.err, ErrBadRequest) && !errors.Is(r.err, ErrUnsupported) {
				t.Fatalf("error %v", r.err)
			}
			if n := len(d.seen()); n != before {
				t.Fatalf("dialled for a refused request")
			}
		})
		t.Run(tc.name+"/second", func(t *testing.T) {
			c := dialTCP(t, h.addr())
			br := bufio.NewReader(c)
			io.WriteString(c, good)
			if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "GET /good" {
				t.Fatalf("good request: %d %q", resp.StatusCode, body)
			}
			io.WriteString(c, bad)
			if resp, _ := readResp(t, br, "GET"); resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d close=%v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			expectClosed(t, c, br)
			if r := h.result(t); r.err != nil {
				t.Fatal(r.err)
			}
			if err := h.forwarded(t); !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("ServeForward: %v", err)
			}
			if got := o.next(t); got != wantGood {
				t.Fatalf("origin got %q, want only %q", got, wantGood)
			}
			logs := log.all()
			if l := logs[len(logs)-1]; l.Status != tc.status || l.Err == nil {
				t.Fatalf("last request log %+v", l)
			}
		})
	}
	o.none(t)
}

// TestForwardStaleUpstream: an origin that closes an idle keep-alive connection without saying
// so: the next request (no body) is sent again over a new connection.
func TestForwardStaleUpstream(t *testing.T) {
	o := startOrigin(t, func(c net.Conn, br *bufio.Reader, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close() // after one answer, without Connection: close
		return false
	})
	h := startProxy(t, HTTP, (&dialer{}).dial)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	c := dialTCP(t, h.addr())
	br := bufio.NewReader(c)
	for i := range 3 {
		fmt.Fprintf(c, "GET http://%s/%d HTTP/1.1\r\nHost: %s\r\n\r\n", host, i, host)
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		// The origin's close is seen before the next request goes out.
		if got, want := o.next(t), fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, host); got != want {
			t.Fatalf("origin connection %d got %q", i, got)
		}
	}
	c.CloseWrite()
	expectClosed(t, c, br)
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	h.result(t)
}

// TestForwardConnectAfterGet: a CONNECT on a connection that carried a plain request becomes a
// tunnel.
func TestForwardConnectAfterGet(t *testing.T) {
	o := startOrigin(t, nil)
	echo := testutil.EchoServer(t)
	h := startProxy(t, HTTP, (&dialer{}).dial)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	c := dialTCP(t, h.addr())
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET http://%s/x HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "GET /x" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	io.WriteString(c, connectReq(echo.Addr())+"ping")
	got := make([]byte, len(connectEstablished)+4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != connectEstablished+"ping" {
		t.Fatalf("%q %v", got, err)
	}
	c.CloseWrite()
	expectClosed(t, c, br)
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	h.result(t)
}

// BenchmarkForwardKeepAliveGET: small GETs one after the other on one keep-alive connection
// (per-request cost of the request loop).
func BenchmarkForwardKeepAliveGET(b *testing.B) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer origin.Close()
	h := startProxy(b, HTTP, (&dialer{}).dial)
	host := origin.Listener.Addr().String()
	var c *net.TCPConn
	var br *bufio.Reader
	connect := func() {
		c = dialTCP(b, h.addr())
		c.SetDeadline(time.Time{})
		br = bufio.NewReader(c)
	}
	connect()
	req := []byte("GET http://" + host + "/x HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.Close { // maxRequestsPerConn
			connect()
		}
	}
	c.CloseWrite()
	io.Copy(io.Discard, br)
}

// BenchmarkForwardDownload: a 4 MiB response through the request loop, and through CONNECT (the
// raw relay) for comparison.
func BenchmarkForwardDownload(b *testing.B) {
	origin := httptest.NewServer(originMux())
	defer origin.Close()
	h := startProxy(b, HTTP, (&dialer{}).dial)
	for _, mode := range []string{"forward", "connect"} {
		b.Run(mode, func(b *testing.B) {
			c := dialTCP(b, h.addr())
			c.SetDeadline(time.Time{})
			br := bufio.NewReader(c)
			host := origin.Listener.Addr().String()
			if mode == "connect" {
				io.WriteString(c, connectReq(host))
				if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
					b.Fatal(resp, err)
				}
			}
			target := "http://" + host + "/download"
			if mode == "connect" {
				target = "/download"
			}
			req := []byte("GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
			b.SetBytes(int64(len(downData)))
			for b.Loop() {
				c.Write(req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
			}
			c.CloseWrite()
			io.Copy(io.Discard, br)
		})
	}
}
