package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"

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
	sink := echoServer(f).Addr().String()
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
			if s.Upstream == nil || s.Client == nil {
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
				// No final response: fine for a silent failure or a forwarded request.
				if s != nil && !s.CloseAfterResponse {
					t.Fatalf("CONNECT session without a 200: %q", out)
				}
				return
			}
			resp, rerr := http.ReadResponse(br, nil)
			if rerr != nil {
				t.Fatalf("proxy wrote %q: %v", out, rerr)
			}
			if _, rerr := io.ReadAll(resp.Body); rerr != nil {
				t.Fatalf("proxy wrote %q: %v", out, rerr)
			}
			if resp.StatusCode == 100 {
				continue
			}
			if (resp.StatusCode == 200) != (s != nil) || (s != nil && s.CloseAfterResponse) {
				t.Fatalf("status %d with session %+v, error %v", resp.StatusCode, s, err)
			}
			if br.Buffered() != 0 {
				t.Fatalf("proxy wrote %q: trailing bytes", out)
			}
			return
		}
	})
}
