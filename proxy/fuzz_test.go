package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// fuzzHandshake feeds each input to Handshake over real TCP, half-closed after the input, and
// returns what the proxy wrote. Targets with port%3 == 1 dial a real echo server, port%3 == 2
// dial nil, nil, the rest fail with a reply code.
func fuzzHandshake(f *testing.F, kind Kind, check func(t *testing.T, in, out []byte, s *Session, err error)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	sink := testutil.EchoServer(f).Addr()
	dial := func(ctx context.Context, t Target) (net.Conn, error) {
		switch t.Port % 3 {
		case 1:
			var d net.Dialer
			return d.DialContext(ctx, "tcp", sink)
		case 2:
			return nil, nil
		}
		return nil, codeErr(messages.ReplyCode(t.Port % 9))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := dialTCP(t, ln.Addr().String())
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		outc := make(chan []byte, 1)
		go func() {
			c.Write(in)
			c.CloseWrite()
			out, _ := io.ReadAll(c)
			outc <- out
		}()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		s, err := Handshake(ctx, kind, sc, dial)
		cancel()
		if (s == nil) == (err == nil) {
			t.Fatalf("session %v with error %v", s, err)
		}
		if s != nil {
			if s.Upstream == nil || (s.Client == nil) != s.Forward {
				t.Fatalf("incomplete session %+v", s)
			}
			s.Upstream.Close()
		}
		sc.Close()
		check(t, in, <-outc, s, err)
	})
}

func FuzzSOCKS5Handshake(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		{5},
		{5, 0},
		{5, 1, 2},
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		cat(greetNoAuth, domainReq("example.test", 1)),
		cat(greetNoAuth, domainReq("example.test", 3)),
		cat(greetNoAuth, domainReq("example.test", 2)),
		cat(greetNoAuth, domainReq("", 1)),
		cat(greetNoAuth, socksReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, 4), []byte("data")),
		cat(greetNoAuth, socksReq(cmdConnect, atypIPv6, make([]byte, 16), 7)),
		cat(greetNoAuth, socksReq(2, atypIPv4, []byte{1, 2, 3, 4}, 1)),
		cat(greetNoAuth, []byte{5, 1, 0, 9, 1, 2}),
		cat(greetNoAuth, []byte{5, 1, 0, 3, 200, 'a'}),
		cat([]byte{5, 255}, bytes.Repeat([]byte{1}, 255)),
	} {
		f.Add(seed)
	}
	fuzzHandshake(f, SOCKS5, func(t *testing.T, in, out []byte, s *Session, err error) {
		switch len(out) {
		case 0:
		case 2:
			if out[0] != 5 || (out[1] != 0 && out[1] != 0xFF) {
				t.Fatalf("method reply % x", out)
			}
		case 12:
			if out[0] != 5 || out[1] != 0 || out[2] != 5 || out[4] != 0 || out[5] != atypIPv4 {
				t.Fatalf("reply % x", out)
			}
			if (out[3] == 0) != (s != nil) {
				t.Fatalf("reply % x with session %v, error %v", out, s, err)
			}
		default:
			t.Fatalf("proxy wrote % x", out)
		}
	})
}

func FuzzHTTPHandshake(f *testing.F) {
	for _, seed := range []string{
		"",
		"hello\r\n\r\n",
		"CONNECT example.test:1 HTTP/1.1\r\nHost: example.test:1\r\n\r\npipelined",
		"CONNECT example.test:3 HTTP/1.1\r\n\r\n",
		"CONNECT example.test:2 HTTP/1.1\r\n\r\n",
		"CONNECT [::1]:4 HTTP/1.1\r\n\r\n",
		"CONNECT example.test HTTP/1.1\r\n\r\n",
		"GET http://example.test:1/x HTTP/1.1\r\nConnection: X-A, close\r\nX-A: 1\r\n\r\n",
		"POST http://example.test:1/ HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
		"POST http://example.test:1/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\n\r\n",
		"POST http://example.test:1/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST http://example.test:1/ HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
		"GET http://example.test:3/ HTTP/1.0\r\n\r\n",
		"GET https://example.test/ HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
		"GET http://[fe80::1%25eth0]:1/ HTTP/1.1\r\n\r\n",
		"GET http://example.test:1/ HTTP/1.1\r\nExpect: tea\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	fuzzHandshake(f, HTTP, func(t *testing.T, in, out []byte, s *Session, err error) {
		br := bufio.NewReader(bytes.NewReader(out))
		for {
			if _, perr := br.Peek(1); perr != nil {
				// No response: fine for a silent failure or a forward session.
				if s != nil && !s.Forward {
					t.Fatalf("CONNECT session without a 200: %q", out)
				}
				return
			}
			if s != nil && s.Forward {
				t.Fatalf("forward session, but the handshake wrote %q", out)
			}
			resp, rerr := http.ReadResponse(br, nil)
			if rerr != nil {
				t.Fatalf("proxy wrote %q: %v", out, rerr)
			}
			if _, rerr := io.ReadAll(resp.Body); rerr != nil {
				t.Fatalf("proxy wrote %q: %v", out, rerr)
			}
			if (resp.StatusCode == 200) != (s != nil) {
				t.Fatalf("status %d with session %+v, error %v", resp.StatusCode, s, err)
			}
			if br.Buffered() != 0 {
				t.Fatalf("proxy wrote %q: trailing bytes", out)
			}
			return
		}
	})
}

// FuzzHTTPForward feeds each input as everything a client sends on one connection to an HTTP
// proxy session (HandshakeWith, then ServeForward for plain-HTTP requests) whose every dial
// reaches one real recording origin. It never panics; whatever reaches the origin is a sequence of
// well-formed, unambiguous origin-form requests without proxy credentials; a first request whose
// head is ambiguous (by an oracle independent of the proxy's checks) reaches nothing; and what the
// client gets parses as a sequence of responses.
func FuzzHTTPForward(f *testing.F) {
	for _, tc := range smuggling {
		f.Add([]byte(strings.ReplaceAll(tc.head, "HOST", "o.test")))
		f.Add([]byte("GET http://o.test/ok HTTP/1.1\r\nHost: o.test\r\n\r\n" + strings.ReplaceAll(tc.head, "HOST", "o.test")))
	}
	for _, seed := range []string{
		"GET http://o.test/a HTTP/1.1\r\nHost: o.test\r\nProxy-Authorization: Basic dTpw\r\nProxy-Connection: keep-alive\r\n\r\n" +
			"GET http://p.test:81/b HTTP/1.1\r\nHost: p.test:81\r\nConnection: close\r\n\r\n",
		"POST http://o.test/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\nGET http://o.test/d HTTP/1.1\r\n\r\n",
		"POST http://o.test/e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
		"POST http://o.test/f HTTP/1.1\r\nContent-Length: 50\r\n\r\nshort",
		"POST http://o.test/g HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET http://o.test/h HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD http://o.test/i HTTP/1.0\r\n\r\n",
		"GET http://o.test/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET http://o.test/j HTTP/1.1\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n",
		"GET http://o.test/k HTTP/1.1\nHost: o.test\n\n",
		"\r\nGET http://o.test/l HTTP/1.1\r\n\r\n",
		"CONNECT o.test:443 HTTP/1.1\r\n\r\nGET http://o.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://o.test/m HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
	} {
		f.Add([]byte(seed))
	}
	o := startOrigin(f, func(c net.Conn, br *bufio.Reader, req *http.Request) bool {
		body := req.Method + " " + req.RequestURI
		if req.Method == http.MethodHead {
			body = ""
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	var dials atomic.Int32
	dial := func(ctx context.Context, _ Target) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", o.srv.Addr())
		if err == nil {
			dials.Add(1)
		}
		return c, err
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		dials.Store(0)
		c := dialTCP(t, ln.Addr().String())
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		type output struct {
			b   []byte
			err error
		}
		outc := make(chan output, 1)
		go func() {
			c.Write(in)
			c.CloseWrite()
			b, err := io.ReadAll(c)
			outc <- output{b, err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		s, err := HandshakeWith(ctx, HTTP, sc, dial, Options{})
		if s != nil && s.Forward {
			err = ServeForward(ctx, s, dial, nil, nil)
		} else if s != nil {
			s.Upstream.Close()
		}
		sc.Close()
		out := <-outc
		var raw []string
		for range dials.Load() {
			raw = append(raw, o.next(t))
		}
		if head, ok := firstHead(in); ok && ambiguousHead(head) && len(raw) > 0 {
			t.Fatalf("ambiguous first request %q reached the origin: %q (err %v)", head, raw, err)
		}
		if !bytes.Contains(in, []byte("CONNECT")) { // a CONNECT tunnel carries anything
			for _, r := range raw {
				checkForwarded(t, r)
			}
		}
		if out.err == nil {
			checkResponses(t, out.b)
		}
	})
}

// firstHead returns the input's first request head (request line and header lines, without the
// blank line), if it is complete.
func firstHead(in []byte) ([]byte, bool) {
	for i := 0; i < len(in); {
		j := bytes.IndexByte(in[i:], '\n')
		if j < 0 {
			return nil, false
		}
		line := bytes.TrimSuffix(in[i:i+j], []byte("\r"))
		if len(line) == 0 && i > 0 {
			return in[:i], true
		}
		i += j + 1
	}
	return nil, false
}

// ambiguousHead is the test's own judgement of a request head (RFC 9112), independent of the
// proxy's: a version other than HTTP/1.0 or 1.1, obsolete line folding, whitespace in or after a
// field name, Content-Length with Transfer-Encoding, differing Content-Lengths, Transfer-Encoding
// in HTTP/1.0.
func ambiguousHead(head []byte) bool {
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	fields := strings.Fields(lines[0])
	if len(fields) == 0 {
		return true
	}
	version := fields[len(fields)-1]
	if version != "HTTP/1.1" && version != "HTTP/1.0" {
		return true
	}
	var cls []string
	te := false
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			return true
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		if strings.ContainsAny(name, " \t") {
			return true
		}
		switch strings.ToLower(name) {
		case "content-length":
			cls = append(cls, strings.TrimSpace(value))
		case "transfer-encoding":
			te = true
		}
	}
	for _, v := range cls {
		if v != cls[0] {
			return true
		}
	}
	return (te && len(cls) > 0) || (te && version == "HTTP/1.0")
}

// checkForwarded checks what one origin connection received: well-formed origin-form HTTP/1.1
// requests, each unambiguous and without proxy headers; only the last may be cut short (the proxy
// resets an upstream when the client's body fails).
func checkForwarded(t *testing.T, raw string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	for i := 0; ; i++ {
		if _, err := br.Peek(1); err == io.EOF {
			return
		}
		rest := raw[len(raw)-br.Buffered():]
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return // cut short
			}
			t.Fatalf("origin got an unparsable request %d (%v) in %q", i, err, raw)
		}
		head, _ := firstHead([]byte(rest))
		if ambiguousHead(head) || req.Proto != "HTTP/1.1" || !strings.HasPrefix(req.RequestURI, "/") {
			t.Fatalf("origin got request %d %q", i, head)
		}
		for _, h := range []string{"Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "Te"} {
			if _, ok := req.Header[h]; ok {
				t.Fatalf("origin got %s in %q", h, head)
			}
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return
			}
			t.Fatalf("origin got request %d with a bad body (%v): %q", i, err, raw)
		}
	}
}

// checkResponses checks the client got a sequence of whole responses (an upgraded or CONNECT
// stream aside).
func checkResponses(t *testing.T, out []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(out))
	for i := 0; i < 1000; i++ {
		if _, err := br.Peek(1); err == io.EOF {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d unparsable (%v): %q", i, err, out)
		}
		if resp.StatusCode == 200 && strings.HasPrefix(resp.Status, "200 Connection established") ||
			resp.StatusCode == http.StatusSwitchingProtocols {
			return
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("response %d body (%v): %q", i, err, out)
		}
	}
}
