package proxy

// What a forwarded exchange carries: upgrades (WebSocket and raw), the origin's responses and
// failures, and request bodies.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/net/websocket"
)

// TestForwardUpgradeWebSocket: a WebSocket client (x/net/websocket) through the HTTP proxy to a
// WebSocket echo origin: the upgrade is forwarded, then frames go both ways.
func TestForwardUpgradeWebSocket(t *testing.T) {
	origin := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for range 100 {
			var m string
			if websocket.Message.Receive(ws, &m) != nil || websocket.Message.Send(ws, m) != nil {
				return
			}
		}
	}))
	defer origin.Close()
	h := startProxy(t, HTTP, (&dialer{}).dial)
	hostport := origin.Listener.Addr().String()
	cfg, err := websocket.NewConfig("ws://"+hostport+"/echo", "http://"+hostport)
	if err != nil {
		t.Fatal(err)
	}
	// Absolute form on the request line, as a client talking to a proxy sends it.
	cfg.Location = &url.URL{Scheme: "http", Opaque: "//" + hostport + "/echo", Host: hostport}
	c := dialTCP(t, h.addr())
	ws, err := websocket.NewClient(cfg, c)
	if err != nil {
		t.Fatalf("websocket handshake through the proxy: %v", err)
	}
	for i := range 5 {
		msg := strings.Repeat(strconv.Itoa(i), 1000*(i+1))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	// End the way a client that is done does: its side first, then read until the origin's end.
	c.CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("after the client's end: %v", err)
	}
	if r := h.result(t); r.err != nil || !r.s.Forward {
		t.Fatalf("handshake %+v", r)
	}
	if err := h.forwarded(t); err != nil {
		t.Fatalf("ServeForward: %v", err)
	}
}

// TestForwardUpgradeRaw: the exact upgrade request the origin gets, and bytes both ways after 101
// (including what each side sent right behind the heads).
func TestForwardUpgradeRaw(t *testing.T) {
	got := make(chan string, 1)
	o := startOrigin(t, func(c net.Conn, br *bufio.Reader, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\nX-O: 1\r\n\r\nhello from origin")
		b := make([]byte, len("hello from client"))
		io.ReadFull(br, b)
		got <- string(b)
		c.(*net.TCPConn).CloseWrite()
		return false
	})
	h := startProxy(t, HTTP, (&dialer{}).dial)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	c := dialTCP(t, h.addr())
	fmt.Fprintf(c, "GET http://%s/up HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\nUpgrade: x-test\r\n\r\n", host, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "x-test" || resp.Header.Get("X-O") != "1" {
		t.Fatalf("response %+v, %v", resp, err)
	}
	io.WriteString(c, "hello from client")
	c.CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "hello from origin" {
		t.Fatalf("after 101: %q, %v", rest, err)
	}
	if g := <-got; g != "hello from client" {
		t.Fatalf("origin got %q after 101", g)
	}
	if err := h.forwarded(t); err != nil {
		t.Fatal(err)
	}
	want := "GET /up HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\nhello from client"
	if raw := o.next(t); raw != want {
		t.Fatalf("origin got %q, want %q", raw, want)
	}
	h.result(t)
}

// TestForwardResponses: framing for the client whatever the origin does.
func TestForwardResponses(t *testing.T) {
	answers := map[string]string{
		"/chunked":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nabcde\r\n0\r\nX-T: v\r\n\r\n",
		"/eof":      "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
		"/head":     "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
		"/204":      "HTTP/1.1 204 No Content\r\n\r\n",
		"/304":      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
		"/hints":    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/close":    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		"/hop":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Keep: k\r\n\r\nok",
		"/noreason": "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
	}
	o := startOrigin(t, func(c net.Conn, br *bufio.Reader, req *http.Request) bool {
		a := answers[req.URL.Path]
		io.WriteString(c, a)
		return !strings.Contains(a, "Connection: close") && req.URL.Path != "/eof"
	})
	h := startProxy(t, HTTP, (&dialer{}).dial)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	cases := []struct {
		path, method, proto string
		want                string // the exact response the client gets
		closes              bool
	}{
		{"/chunked", "GET", "1.1", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nabcde\r\n0\r\nX-T: v\r\n\r\n", false},
		{"/chunked", "GET", "1.0", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcde", true},
		{"/eof", "GET", "1.1", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n", false},
		{"/head", "HEAD", "1.1", "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", false},
		{"/204", "GET", "1.1", "HTTP/1.1 204 No Content\r\n\r\n", false},
		{"/304", "GET", "1.1", "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n", false},
		{"/hints", "GET", "1.1", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"/hints", "GET", "1.0", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", true},
		{"/close", "GET", "1.1", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"/hop", "GET", "1.1", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Keep: k\r\n\r\nok", false},
		{"/noreason", "GET", "1.1", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
	}
	for _, tc := range cases {
		t.Run(tc.method+tc.path+"/"+tc.proto, func(t *testing.T) {
			c := dialTCP(t, h.addr())
			fmt.Fprintf(c, "%s http://%s%s HTTP/%s\r\nHost: %s\r\n\r\n", tc.method, host, tc.path, tc.proto, host)
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != tc.want {
				t.Fatalf("client got %q, %v; want %q", got, err, tc.want)
			}
			if !tc.closes { // the connection is still usable
				fmt.Fprintf(c, "%s http://%s%s HTTP/%s\r\nHost: %s\r\n\r\n", tc.method, host, tc.path, tc.proto, host)
				if _, err := io.ReadFull(c, got); err != nil || string(got) != tc.want {
					t.Fatalf("client got %q, %v the second time; want %q", got, err, tc.want)
				}
				c.CloseWrite()
			}
			expectClosed(t, c, bufio.NewReader(c))
			if err := h.forwarded(t); err != nil {
				t.Fatal(err)
			}
			h.result(t)
		})
	}
}

// TestForwardOriginFailures: no answer at all gets 502; a response cut short resets the client
// (it must not take it for a whole one); an unasked 101 gets 502.
func TestForwardOriginFailures(t *testing.T) {
	o := startOrigin(t, func(c net.Conn, br *bufio.Reader, req *http.Request) bool {
		switch req.URL.Path {
		case "/cut":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
		case "/cut-chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		case "/101":
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		}
		return false
	})
	h := startProxy(t, HTTP, (&dialer{}).dial)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	t.Run("no-answer", func(t *testing.T) {
		resp, _ := httpExchange(t, h, "GET http://"+host+"/nothing HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp == nil || resp.StatusCode != 502 {
			t.Fatalf("response %v, want 502", resp)
		}
		if err := h.forwarded(t); err == nil {
			t.Fatal("no error")
		}
		h.result(t)
	})
	t.Run("unasked-101", func(t *testing.T) {
		resp, _ := httpExchange(t, h, "GET http://"+host+"/101 HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp == nil || resp.StatusCode != 502 {
			t.Fatalf("response %v, want 502", resp)
		}
		if err := h.forwarded(t); err == nil {
			t.Fatal("no error")
		}
		h.result(t)
	})
	for _, path := range []string{"/cut", "/cut-chunked"} {
		t.Run(path, func(t *testing.T) {
			c := dialTCP(t, h.addr())
			fmt.Fprintf(c, "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n\r\n", host, path, host)
			_, err := io.ReadAll(c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read %v, want a reset", err)
			}
			if err := h.forwarded(t); err == nil {
				t.Fatal("no error")
			}
			h.result(t)
		})
	}
}

// TestForwardBodies: a request body reaches the origin whole, as sent (sized) or re-chunked; an
// origin that answers early without reading gets the connection closed after its answer.
func TestForwardBodies(t *testing.T) {
	t.Run("early-answer", func(t *testing.T) {
		early := make(chan struct{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
			close(early)
			io.Copy(io.Discard, br)
		}()
		h := startProxy(t, HTTP, (&dialer{}).dial)
		c := dialTCP(t, h.addr())
		fmt.Fprintf(c, "POST http://%s/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nsome", ln.Addr())
		br := bufio.NewReader(c)
		resp, body := readResp(t, br, "POST")
		if resp.StatusCode != 413 || body != "big" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		<-early
		// The rest of the body never comes: the proxy closes after a moment.
		expectClosed(t, c, br)
		if err := h.forwarded(t); err == nil {
			t.Fatal("no error for a body that never came")
		}
		h.result(t)
	})
	t.Run("expect-continue-keepalive", func(t *testing.T) {
		o := startOrigin(t, nil)
		host := "127.0.0.1:" + strconv.Itoa(o.port(t))
		h := startProxy(t, HTTP, (&dialer{}).dial)
		c := dialTCP(t, h.addr())
		br := bufio.NewReader(c)
		for i := range 3 {
			fmt.Fprintf(c, "PUT http://%s/p%d HTTP/1.1\r\nHost: %s\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", host, i, host)
			if line, err := br.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
				t.Fatalf("%q %v", line, err)
			}
			br.ReadString('\n')
			io.WriteString(c, "hello")
			if resp, body := readResp(t, br, "PUT"); resp.StatusCode != 200 || body != fmt.Sprintf("PUT /p%d", i) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
		}
		var want strings.Builder
		for i := range 3 {
			fmt.Fprintf(&want, "PUT /p%d HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello", i, host)
		}
		finishKeepalive(t, c, br, h, o, want.String())
		h.result(t)
	})
}
