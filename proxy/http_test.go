package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// originMux serves /download (downData) and /upload (hex sha256 of the body, with the
// Transfer-Encoding and Expect the origin saw in headers).
func originMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(downData)))
		w.Write(downData)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Expect", r.Header.Get("Expect"))
		fmt.Fprintf(w, "%x", h.Sum(nil))
	})
	return mux
}

func proxyTransport(h *harness) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr()}),
		DisableKeepAlives:     true,
		ExpectContinueTimeout: testTimeout, // a missing 100 Continue would stall the test
	}
}

func get(t *testing.T, c *http.Client, u string) []byte {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return b
}

// upload POSTs upData and checks the origin hashed the same bytes; it returns the response.
func upload(t *testing.T, c *http.Client, u string, chunked, expect bool) *http.Response {
	t.Helper()
	var body io.Reader = bytes.NewReader(upData)
	if chunked {
		body = struct{ io.Reader }{body} // unknown length: the Transport sends chunked
	}
	req, err := http.NewRequest("POST", u, body)
	if err != nil {
		t.Fatal(err)
	}
	if expect {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %v %s", u, resp.StatusCode, err, b)
	}
	if want := sha256.Sum256(upData); string(b) != hex.EncodeToString(want[:]) {
		t.Fatalf("origin got sha256 %s, want %x", b, want)
	}
	return resp
}

// checkSession checks the next handshake's session and, for a Forward one, that ServeForward
// then ended cleanly.
func checkSession(t *testing.T, h *harness, method string, target Target, forward bool) {
	t.Helper()
	r := h.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.s.Method != method || r.s.Target != target || r.s.Forward != forward {
		t.Fatalf("session %+v, want %s %v forward=%v", r.s, method, target, forward)
	}
	if forward {
		if err := h.forwarded(t); err != nil {
			t.Fatalf("ServeForward: %v", err)
		}
	}
}

func TestHTTPAbsoluteURI(t *testing.T) {
	origin := httptest.NewServer(originMux())
	defer origin.Close()
	op := uint16(origin.Listener.Addr().(*net.TCPAddr).Port)
	d := &dialer{hosts: map[string]string{"example.test": "127.0.0.1"}}
	h := startProxy(t, HTTP, d.dial)
	tr := proxyTransport(h)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	base := "http://example.test:" + strconv.Itoa(int(op))
	target := Target{"example.test", op}

	t.Run("download", func(t *testing.T) {
		b := get(t, c, base+"/download")
		if sha256.Sum256(b) != sha256.Sum256(downData) {
			t.Fatalf("download: %d bytes, sha256 differs", len(b))
		}
		checkSession(t, h, "GET", target, true)
	})
	t.Run("upload", func(t *testing.T) {
		resp := upload(t, c, base+"/upload", false, false)
		if te := resp.Header.Get("X-TE"); te != "" {
			t.Fatalf("origin saw Transfer-Encoding %q", te)
		}
		checkSession(t, h, "POST", target, true)
	})
	t.Run("upload-chunked", func(t *testing.T) {
		resp := upload(t, c, base+"/upload", true, false)
		if te := resp.Header.Get("X-TE"); te != "chunked" {
			t.Fatalf("origin saw Transfer-Encoding %q, want chunked", te)
		}
		checkSession(t, h, "POST", target, true)
	})
	t.Run("upload-expect-continue", func(t *testing.T) {
		resp := upload(t, c, base+"/upload", false, true)
		if e := resp.Header.Get("X-Expect"); e != "" {
			t.Fatalf("origin saw Expect %q", e)
		}
		checkSession(t, h, "POST", target, true)
	})
	for _, tg := range d.seen() {
		if tg != target {
			t.Fatalf("dialed %v, want %v (names unresolved)", tg, target)
		}
	}
}

func TestHTTPConnect(t *testing.T) {
	origin := httptest.NewTLSServer(originMux())
	defer origin.Close()
	op := uint16(origin.Listener.Addr().(*net.TCPAddr).Port)
	d := &dialer{hosts: map[string]string{"example.test": "127.0.0.1"}}
	h := startProxy(t, HTTP, d.dial)
	roots := x509.NewCertPool()
	roots.AddCert(origin.Certificate())
	tr := proxyTransport(h)
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: "example.com"}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	base := "https://example.test:" + strconv.Itoa(int(op))
	target := Target{"example.test", op}

	t.Run("download", func(t *testing.T) {
		b := get(t, c, base+"/download")
		if sha256.Sum256(b) != sha256.Sum256(downData) {
			t.Fatalf("download: %d bytes, sha256 differs", len(b))
		}
		checkSession(t, h, "CONNECT", target, false)
	})
	t.Run("upload", func(t *testing.T) {
		upload(t, c, base+"/upload", false, false)
		checkSession(t, h, "CONNECT", target, false)
	})
	t.Run("raw-ipv4", func(t *testing.T) {
		data := dataServer(t, "127.0.0.1:0")
		rawConnect(t, h, data.Addr())
		checkSession(t, h, "CONNECT", Target{"127.0.0.1", data.Port()}, false)
	})
	t.Run("raw-ipv6", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skip("no IPv6 loopback")
		}
		ln.Close()
		data := dataServer(t, "[::1]:0")
		rawConnect(t, h, data.Addr())
		checkSession(t, h, "CONNECT", Target{"::1", data.Port()}, false)
	})
}

// rawConnect CONNECTs to addr (a dataServer) and runs the data exchange through the tunnel.
func rawConnect(t *testing.T, h *harness, addr string) {
	t.Helper()
	c := dialTCP(t, h.addr())
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	got := make([]byte, len(connectEstablished))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != connectEstablished {
		t.Fatalf("reply %q, %v", got, err)
	}
	exchange(t, c)
}

func TestHTTPConnectPipelined(t *testing.T) {
	echo := testutil.EchoServer(t)
	h := startProxy(t, HTTP, (&dialer{}).dial)
	c := dialTCP(t, h.addr())
	a := echo.Addr()
	// The bytes after the request arrive with it and sit in the proxy's bufio.Reader.
	if _, err := io.WriteString(c, "CONNECT "+a+" HTTP/1.1\r\nHost: "+a+"\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	want := connectEstablished + "hello"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	h.result(t)
}

// captureServer answers one request with "ok" and sends the raw bytes it received.
func captureServer(t *testing.T) (net.Listener, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			ch <- err.Error()
			return
		}
		defer c.Close()
		var raw bytes.Buffer
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(c, &raw)))
		if err == nil {
			_, err = io.Copy(io.Discard, req.Body)
		}
		if err != nil {
			ch <- err.Error()
			return
		}
		ch <- raw.String()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln, ch
}

// TestHTTPForwardRewrite checks the exact bytes sent upstream for absolute-URI requests, and the
// response the client gets: re-framed, without the origin's Connection: close (the client's
// connection stays usable), with its own Connection: close when the client asked for one.
func TestHTTPForwardRewrite(t *testing.T) {
	const keep = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	const closing = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	cases := []struct{ name, req, want, resp string }{
		{
			"hop-by-hop",
			"POST http://example.test:PORT/path?q=1 HTTP/1.1\r\nHost: wrong.example\r\n" +
				"Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nX-Keep: k\r\n" +
				"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9v\r\n" +
				"Keep-Alive: 300\r\nTE: trailers\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello",
			"POST /path?q=1 HTTP/1.1\r\nHost: example.test:PORT\r\n" +
				"Content-Length: 5\r\nX-Keep: k\r\n\r\nhello",
			keep,
		},
		{
			"http10-user-agent",
			"GET http://127.0.0.1:PORT HTTP/1.0\r\nUser-Agent: ua/1\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\nUser-Agent: ua/1\r\n\r\n",
			closing,
		},
		{
			"chunked-trailer",
			"POST http://example.test:PORT/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
				"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
			"POST /c HTTP/1.1\r\nHost: example.test:PORT\r\n" +
				"Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
			keep,
		},
		{
			"client-close-empty-post",
			"POST http://example.test:PORT/e HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
			"POST /e HTTP/1.1\r\nHost: example.test:PORT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
			closing,
		},
	}
	d := &dialer{hosts: map[string]string{"example.test": "127.0.0.1"}}
	h := startProxy(t, HTTP, d.dial)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, upstream := captureServer(t)
			p := strconv.Itoa(int(port(t, ln)))
			c := dialTCP(t, h.addr())
			if _, err := io.WriteString(c, strings.ReplaceAll(tc.req, "PORT", p)); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite() // the request is all: the connection ends after its response
			if got := string(readAll(t, c)); got != tc.resp {
				t.Fatalf("client got %q, want %q", got, tc.resp)
			}
			if got, want := <-upstream, strings.ReplaceAll(tc.want, "PORT", p); got != want {
				t.Fatalf("upstream got\n%q\nwant\n%q", got, want)
			}
			if r := h.result(t); r.err != nil || !r.s.Forward {
				t.Fatalf("result %+v", r)
			}
			if err := h.forwarded(t); err != nil {
				t.Fatalf("ServeForward: %v", err)
			}
		})
	}
}

// httpExchange sends msg, half-closes and parses the proxy's response (nil if it wrote none).
func httpExchange(t *testing.T, h *harness, msg string) (*http.Response, string) {
	t.Helper()
	c := dialTCP(t, h.addr())
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	raw := readAll(t, c)
	if len(raw) == 0 {
		return nil, ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("response %q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("response body %q: %v", raw, err)
	}
	if !resp.Close || !bytes.Contains(raw, []byte("\r\nConnection: close\r\n")) {
		t.Fatalf("response %q lacks Connection: close", raw)
	}
	return resp, string(body)
}

func connectReq(target string) string {
	return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

func getReq(target string) string {
	return "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

func TestHTTPDialErrors(t *testing.T) {
	for _, c := range allCodes {
		for _, mk := range []func(string) string{connectReq, getReq} {
			msg := mk("example.test:443")
			t.Run(messages.ReplyCodeNames[c.code]+"/"+strings.Fields(msg)[0], func(t *testing.T) {
				h := startProxy(t, HTTP, func(context.Context, Target) (net.Conn, error) {
					return nil, fmt.Errorf("tunnel: %w", codeErr(c.code))
				})
				resp, body := httpExchange(t, h, msg)
				if resp == nil || resp.StatusCode != c.status {
					t.Fatalf("response %v, want status %d", resp, c.status)
				}
				if !strings.Contains(body, messages.ReplyCodeNames[c.code]) {
					t.Fatalf("body %q does not name %q", body, messages.ReplyCodeNames[c.code])
				}
				if r := h.result(t); !errors.Is(r.err, codeErr(c.code)) {
					t.Fatalf("error %v", r.err)
				}
			})
		}
	}
	t.Run("real-refused", func(t *testing.T) {
		h := startProxy(t, HTTP, (&dialer{}).dial)
		resp, _ := httpExchange(t, h, getReq("127.0.0.1:"+strconv.Itoa(int(testutil.ClosedAddr(t).Port()))))
		if resp == nil || resp.StatusCode != 502 {
			t.Fatalf("response %v, want 502", resp)
		}
		h.result(t)
	})
	t.Run("handshake-deadline", func(t *testing.T) {
		h := startHarness(t, &harness{kind: HTTP, dial: blockingDial, timeout: testTimeout / 100})
		for _, msg := range []string{connectReq("slow.test:443"), getReq("slow.test")} {
			resp, _ := httpExchange(t, h, msg)
			if resp == nil || resp.StatusCode != 504 {
				t.Fatalf("%q: response %v, want 504", msg, resp)
			}
			if r := h.result(t); !errors.Is(r.err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want DeadlineExceeded", r.err)
			}
		}
	})
}

func TestHTTPMalformed(t *testing.T) {
	big := "GET http://example.test/ HTTP/1.1\r\nX-Big: " + strings.Repeat("a", MaxHeaderBytes+8<<10) + "\r\n\r\n"
	var many strings.Builder
	many.WriteString("GET http://example.test/ HTTP/1.1\r\n")
	for i := 0; many.Len() <= MaxHeaderBytes+8<<10; i++ {
		fmt.Fprintf(&many, "X-H-%d: %s\r\n", i, strings.Repeat("v", 30))
	}
	many.WriteString("\r\n")
	cases := []struct {
		name, msg string
		status    int // 0: no response
		err       error
	}{
		{"empty", "", 0, io.EOF},
		{"garbage", "hello\r\n\r\n", 400, ErrBadRequest},
		{"binary", "\x05\x01\x00", 400, ErrBadRequest},
		{"origin-form", "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n", 400, ErrBadRequest},
		{"options-star", "OPTIONS * HTTP/1.1\r\nHost: example.test\r\n\r\n", 400, ErrBadRequest},
		{"https-absolute", "GET https://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n", 400, ErrUnsupported},
		{"ftp-absolute", "GET ftp://example.test/ HTTP/1.1\r\n\r\n", 400, ErrUnsupported},
		{"no-host", "GET http:///x HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"bad-host", "GET http://exa%20mple.test/ HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"bad-port", "GET http://example.test:0/ HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-no-port", "CONNECT example.test HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-port-zero", "CONNECT example.test:0 HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-port-big", "CONNECT example.test:70000 HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-path", "CONNECT /x HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-empty-host", "CONNECT :443 HTTP/1.1\r\n\r\n", 400, ErrBadRequest},
		{"connect-body", "CONNECT example.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, ErrBadRequest},
		{"truncated-line", "GET http://example.test/ HT", 400, ErrBadRequest},
		{"truncated-headers", "GET http://example.test/ HTTP/1.1\r\nHost: exa", 400, io.ErrUnexpectedEOF},
		{"bad-content-length", "POST http://example.test/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400, ErrBadRequest},
		{"unsupported-te", "POST http://example.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, ErrBadRequest},
		{"expect-unknown", "GET http://example.test/ HTTP/1.1\r\nExpect: tea\r\n\r\n", 417, ErrUnsupported},
		{"oversized-header", big, 431, ErrHeaderTooLarge},
		{"too-many-headers", many.String(), 431, ErrHeaderTooLarge},
	}
	var dials int
	var mu sync.Mutex
	h := startProxy(t, HTTP, func(context.Context, Target) (net.Conn, error) {
		mu.Lock()
		dials++
		mu.Unlock()
		return nil, errors.New("must not dial")
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := httpExchange(t, h, tc.msg)
			switch {
			case tc.status == 0 && resp != nil:
				t.Fatalf("unexpected response %d", resp.StatusCode)
			case tc.status != 0 && (resp == nil || resp.StatusCode != tc.status):
				t.Fatalf("response %v, want %d", resp, tc.status)
			}
			r := h.result(t)
			if !errors.Is(r.err, tc.err) {
				t.Fatalf("error %v, want %v", r.err, tc.err)
			}
			if tc.status == 400 && !errors.Is(r.err, ErrBadRequest) && !errors.Is(r.err, ErrUnsupported) {
				t.Fatalf("error %v is neither ErrBadRequest nor ErrUnsupported", r.err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 0 {
		t.Fatalf("%d dials for malformed requests", dials)
	}
}

func TestHTTPBadChunkedBody(t *testing.T) {
	echo := testutil.EchoServer(t)
	h := startProxy(t, HTTP, (&dialer{}).dial)
	resp, _ := httpExchange(t, h, "POST http://"+echo.Addr()+"/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
	if resp == nil || resp.StatusCode != 400 {
		t.Fatalf("response %v, want 400", resp)
	}
	if r := h.result(t); r.err != nil || !r.s.Forward {
		t.Fatalf("handshake %+v", r)
	}
	if err := h.forwarded(t); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("error %v, want ErrBadRequest", err)
	}
}

func TestHTTPRefuse(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"overload", overloadErr{}, 503},
		{"not-allowed", codeErr(messages.ReplyNotAllowed), 403},
		{"nil", nil, 502},
	}
	for _, tc := range cases {
		for _, msg := range []string{connectReq("example.test:443"), getReq("example.test")} {
			t.Run(tc.name+"/"+strings.Fields(msg)[0], func(t *testing.T) {
				h := startRefuser(t, HTTP, tc.err)
				resp, _ := httpExchange(t, h, msg)
				if resp == nil || resp.StatusCode != tc.status {
					t.Fatalf("response %v, want %d", resp, tc.status)
				}
				r := h.result(t)
				if r.err == nil || (tc.err != nil && !errors.Is(r.err, tc.err)) {
					t.Fatalf("error %v, want %v", r.err, tc.err)
				}
			})
		}
	}
	t.Run("malformed", func(t *testing.T) {
		h := startRefuser(t, HTTP, overloadErr{})
		resp, _ := httpExchange(t, h, "GET / HTTP/1.1\r\n\r\n")
		if resp == nil || resp.StatusCode != 400 {
			t.Fatalf("response %v, want 400", resp)
		}
		if r := h.result(t); !errors.Is(r.err, ErrBadRequest) {
			t.Fatalf("error %v", r.err)
		}
	})
}

// TestHTTPUpstreamStallCancel: an origin that never reads stalls a forwarded upload; cancelling
// ServeForward's ctx (the owner stopping) must end it at once, with the upstream reset.
func TestHTTPUpstreamStallCancel(t *testing.T) {
	stall, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := stall.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	defer func() {
		stall.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	h := startProxy(t, HTTP, (&dialer{}).dial)
	c := dialTCP(t, h.addr())
	const size = 256 << 20 // far more than socket buffers hold
	fmt.Fprintf(c, "POST http://%s/ HTTP/1.1\r\nContent-Length: %d\r\n\r\n", stall.Addr(), size)
	go func() {
		chunk := make([]byte, 64<<10)
		for n := 0; n < size; n += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	if r := h.result(t); r.err != nil || !r.s.Forward {
		t.Fatalf("handshake %+v", r)
	}
	origin := <-accepted // the upload is under way to an origin that does not read
	if origin == nil {
		t.Fatal("the origin was never dialled")
	}
	defer origin.Close()
	h.cancel()
	if err := h.forwarded(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	origin.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.Copy(io.Discard, origin); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("origin read %v, want a reset", err)
	}
}

// TestHTTPClientStall: a client that stops mid-head gets 408 once the handshake's ctx deadline
// passes.
func TestHTTPClientStall(t *testing.T) {
	h := startHarness(t, &harness{kind: HTTP, dial: (&dialer{}).dial, timeout: testTimeout / 50})
	for _, msg := range []string{
		"GET http://example.test/ HTTP/1.1\r\nHost: exa",
	} {
		c := dialTCP(t, h.addr())
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", msg, err)
		}
		if resp.StatusCode != 408 {
			t.Fatalf("%q: status %d, want 408", msg, resp.StatusCode)
		}
		c.Close()
		if r := h.result(t); !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want DeadlineExceeded", r.err)
		}
	}
}
