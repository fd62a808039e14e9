package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

const (
	testUser = "alice"
	testPass = "s3cret-pass"
)

var testAuth = AuthFunc(func(u, p string) bool { return u == testUser && p == testPass })

// userPass is an RFC 1929 request.
func userPass(u, p string) []byte {
	return cat([]byte{1, byte(len(u))}, []byte(u), []byte{byte(len(p))}, []byte(p))
}

func noPassword(t *testing.T, err error) {
	t.Helper()
	if err != nil && (strings.Contains(err.Error(), testPass) || strings.Contains(err.Error(), "wrong-pass")) {
		t.Fatalf("error %q carries the password", err)
	}
}

func TestSOCKS5Auth(t *testing.T) {
	data := dataServer(t, "127.0.0.1:0")
	d := &dialer{}
	h := startHarness(t, &harness{kind: SOCKS5, dial: d.dial, opts: Options{Auth: testAuth}})
	dialVia := func(auth *xproxy.Auth) (net.Conn, error) {
		sd, err := xproxy.SOCKS5("tcp", h.addr(), auth, &net.Dialer{Timeout: testTimeout})
		if err != nil {
			t.Fatal(err)
		}
		return sd.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", data.Addr())
	}

	t.Run("x-net-proxy", func(t *testing.T) {
		c, err := dialVia(&xproxy.Auth{User: testUser, Password: testPass})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange(t, c)
		if r := h.result(t); r.err != nil || r.s.Target.Port != data.Port() {
			t.Fatalf("handshake %+v", r)
		}
	})
	var msgs []string
	for _, auth := range []*xproxy.Auth{{User: testUser, Password: "wrong-pass"}, {User: "mallory", Password: testPass}} {
		t.Run("x-net-proxy-rejected/"+auth.User, func(t *testing.T) {
			if c, err := dialVia(auth); err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			r := h.result(t)
			if !errors.Is(r.err, ErrAuth) {
				t.Fatalf("error %v, want ErrAuth", r.err)
			}
			noPassword(t, r.err)
			if !strings.Contains(r.err.Error(), strconv.Quote(auth.User)) {
				t.Fatalf("error %q does not name the user", r.err)
			}
			msgs = append(msgs, strings.ReplaceAll(r.err.Error(), strconv.Quote(auth.User), "USER"))
		})
	}
	if len(msgs) == 2 && msgs[0] != msgs[1] {
		t.Fatalf("a wrong password and an unknown user are told apart: %q vs %q", msgs[0], msgs[1])
	}
	t.Run("x-net-proxy-no-credentials", func(t *testing.T) {
		if c, err := dialVia(nil); err == nil {
			c.Close()
			t.Fatal("dial succeeded")
		}
		if r := h.result(t); !errors.Is(r.err, ErrAuth) {
			t.Fatalf("error %v, want ErrAuth", r.err)
		}
	})

	req := socksReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, testutil.EchoServer(t).Port())
	cases := []struct {
		name  string
		msg   []byte
		reply []byte
		err   error
	}{
		{"no-auth-only", cat([]byte{5, 1, 0}, req), []byte{5, 0xFF}, ErrAuth},
		{"wrong", cat([]byte{5, 2, 0, 2}, userPass(testUser, "wrong-pass"), req), []byte{5, 2, 1, 1}, ErrAuth},
		{"empty-user", cat([]byte{5, 1, 2}, userPass("", ""), req), []byte{5, 2, 1, 1}, ErrAuth},
		{"bad-version", cat([]byte{5, 1, 2}, []byte{5, 5}, []byte(testUser), []byte{11}, []byte(testPass), req), []byte{5, 2, 1, 1}, ErrBadRequest},
		{"truncated", cat([]byte{5, 1, 2}, []byte{1, 5, 'a', 'l'}), []byte{5, 2}, io.ErrUnexpectedEOF},
		{"truncated-password", cat([]byte{5, 1, 2}, []byte{1, 5}, []byte(testUser), []byte{11, 's'}), []byte{5, 2}, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run("raw/"+tc.name, func(t *testing.T) {
			got := socksExchange(t, h, tc.msg)
			if !bytes.Equal(got, tc.reply) {
				t.Fatalf("reply % x, want % x", got, tc.reply)
			}
			r := h.result(t)
			if !errors.Is(r.err, tc.err) {
				t.Fatalf("error %v, want %v", r.err, tc.err)
			}
			noPassword(t, r.err)
		})
	}
	t.Run("raw/ok", func(t *testing.T) {
		c := dialTCP(t, h.addr())
		c.Write(cat([]byte{5, 2, 0, 2}, userPass(testUser, testPass), req, []byte("ping")))
		got := make([]byte, 2+2+10+4)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:5], []byte{5, 2, 1, 0, 5}) || got[5] != 0 || string(got[14:]) != "ping" {
			t.Fatalf("got % x", got)
		}
		if r := h.result(t); r.err != nil {
			t.Fatal(r.err)
		}
	})
	t.Run("refuse-with-auth", func(t *testing.T) {
		rh := startHarness(t, &harness{kind: SOCKS5, refuse: overloadErr{}, refused: true, opts: Options{Auth: testAuth}})
		if got := socksExchange(t, rh, cat([]byte{5, 1, 2}, userPass(testUser, testPass), req)); !bytes.Equal(got, cat([]byte{5, 2, 1, 0}, failReply(messages.ReplyGeneralFailure))) {
			t.Fatalf("got % x", got)
		}
		if r := rh.result(t); !errors.Is(r.err, overloadErr{}) {
			t.Fatalf("error %v", r.err)
		}
		if got := socksExchange(t, rh, cat([]byte{5, 1, 2}, userPass(testUser, "wrong-pass"), req)); !bytes.Equal(got, []byte{5, 2, 1, 1}) {
			t.Fatalf("got % x", got)
		}
		if r := rh.result(t); !errors.Is(r.err, ErrAuth) {
			t.Fatalf("error %v", r.err)
		}
	})
}

func basic(u, p string) string {
	return "Proxy-Authorization: Basic " + base64Std(u+":"+p) + "\r\n"
}

func TestHTTPAuth(t *testing.T) {
	o := startOrigin(t, nil)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	d := &dialer{}
	h := startHarness(t, &harness{kind: HTTP, dial: d.dial, opts: Options{Auth: testAuth}})

	t.Run("net-http-client", func(t *testing.T) {
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr(), User: url.UserPassword(testUser, testPass)})}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: testTimeout}
		for i := range 3 {
			if b := get(t, c, fmt.Sprintf("http://%s/n%d", host, i)); string(b) != fmt.Sprintf("GET /n%d", i) {
				t.Fatalf("body %q", b)
			}
		}
		tr.CloseIdleConnections()
		if r := h.result(t); r.err != nil {
			t.Fatal(r.err)
		}
		if err := h.forwarded(t); err != nil {
			t.Fatal(err)
		}
		raw := o.next(t)
		if strings.Contains(strings.ToLower(raw), "proxy-authorization") || strings.Count(raw, "GET /n") != 3 {
			t.Fatalf("origin got %q", raw)
		}
	})
	refused := []struct{ name, header string }{
		{"missing", ""},
		{"wrong", basic(testUser, "wrong-pass")},
		{"unknown-user", basic("mallory", testPass)},
		{"not-base64", "Proxy-Authorization: Basic !!!\r\n"},
		{"no-colon", "Proxy-Authorization: Basic " + base64Std(testUser) + "\r\n"},
		{"bearer", "Proxy-Authorization: Bearer abc\r\n"},
		{"twice", basic(testUser, testPass) + basic(testUser, testPass)},
		{"authorization-not-proxy", "Authorization: Basic " + base64Std(testUser+":"+testPass) + "\r\n"},
	}
	for _, tc := range refused {
		for _, first := range []string{"GET http://" + host + "/x HTTP/1.1\r\nHost: " + host + "\r\n", connectReq(host)[:len(connectReq(host))-2]} {
			t.Run(tc.name+"/"+strings.Fields(first)[0], func(t *testing.T) {
				before := len(d.seen())
				resp, _ := httpExchange(t, h, first+tc.header+"\r\n")
				if resp == nil || resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != `Basic realm="warren"` {
					t.Fatalf("response %+v, want 407 with the Basic challenge", resp)
				}
				r := h.result(t)
				if !errors.Is(r.err, ErrAuth) {
					t.Fatalf("error %v, want ErrAuth", r.err)
				}
				noPassword(t, r.err)
				if len(d.seen()) != before {
					t.Fatal("dialled for an unauthenticated request")
				}
			})
		}
	}
	t.Run("connect", func(t *testing.T) {
		echo := testutil.EchoServer(t)
		c := dialTCP(t, h.addr())
		a := echo.Addr()
		io.WriteString(c, "CONNECT "+a+" HTTP/1.1\r\nHost: "+a+"\r\n"+basic(testUser, testPass)+"\r\nping")
		want := connectEstablished + "ping"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("%q %v", got, err)
		}
		if r := h.result(t); r.err != nil {
			t.Fatal(r.err)
		}
	})
	t.Run("keep-alive-checks-every-request", func(t *testing.T) {
		c := dialTCP(t, h.addr())
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET http://%s/one HTTP/1.1\r\nHost: %s\r\n%s\r\n", host, host, basic(testUser, testPass))
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "GET /one" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		fmt.Fprintf(c, "GET http://%s/two HTTP/1.1\r\nHost: %s\r\n%s\r\n", host, host, basic(testUser, "wrong-pass"))
		resp, _ := readResp(t, br, "GET")
		if resp.StatusCode != 407 || !resp.Close || resp.Header.Get("Proxy-Authenticate") != `Basic realm="warren"` {
			t.Fatalf("second request: %d close=%v", resp.StatusCode, resp.Close)
		}
		expectClosed(t, c, br)
		if r := h.result(t); r.err != nil {
			t.Fatal(r.err)
		}
		err := h.forwarded(t)
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("ServeForward: %v, want ErrAuth", err)
		}
		noPassword(t, err)
		if got, want := o.next(t), "GET /one HTTP/1.1\r\nHost: "+host+"\r\n\r\n"; got != want {
			t.Fatalf("origin got %q, want %q", got, want)
		}
	})
	t.Run("refuse-with-auth", func(t *testing.T) {
		rh := startHarness(t, &harness{kind: HTTP, refuse: overloadErr{}, refused: true, opts: Options{Auth: testAuth}})
		if resp, _ := httpExchange(t, rh, getReq(host)); resp == nil || resp.StatusCode != 407 {
			t.Fatalf("response %v, want 407", resp)
		}
		if r := rh.result(t); !errors.Is(r.err, ErrAuth) {
			t.Fatalf("error %v", r.err)
		}
		msg := "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n" + basic(testUser, testPass) + "\r\n"
		if resp, _ := httpExchange(t, rh, msg); resp == nil || resp.StatusCode != 503 {
			t.Fatalf("response %v, want 503", resp)
		}
		if r := rh.result(t); !errors.Is(r.err, overloadErr{}) {
			t.Fatalf("error %v", r.err)
		}
	})
	o.none(t)
}

// TestHandshakeBudget: a client that does not finish its greeting and request, or its request
// head, within Options.HandshakeTimeout is dropped (ErrHandshakeTimeout) although ctx would allow
// more; the dial is not bounded by it.
func TestHandshakeBudget(t *testing.T) {
	const budget = 200 * time.Millisecond
	slowDial := func(ctx context.Context, tg Target) (net.Conn, error) {
		select { // a dial slower than the budget: allowed, it is bounded by ctx only
		case <-time.After(2 * budget):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return (&dialer{}).dial(ctx, tg)
	}
	echo := testutil.EchoServer(t)
	eport := echo.Port()
	cases := []struct {
		name  string
		kind  Kind
		auth  Authenticator
		msg   []byte
		reply string // prefix of what the client gets
	}{
		{"socks5-silent", SOCKS5, nil, nil, ""},
		{"socks5-greeting", SOCKS5, nil, []byte{5, 1, 0}, "\x05\x00"},
		{"socks5-partial-request", SOCKS5, nil, []byte{5, 1, 0, 5, 1, 0, 1, 127}, "\x05\x00"},
		{"socks5-partial-auth", SOCKS5, testAuth, []byte{5, 1, 2, 1, 5, 'a'}, "\x05\x02"},
		{"http-silent", HTTP, nil, nil, ""},
		{"http-partial-head", HTTP, nil, []byte("GET http://example.test/ HTTP/1.1\r\nHost: exa"), "HTTP/1.1 408 "},
	}
	h := map[Kind]*harness{}
	for _, tc := range cases {
		key := tc.kind
		if tc.auth != nil {
			key += 10
		}
		if h[key] == nil {
			h[key] = startHarness(t, &harness{kind: tc.kind, dial: slowDial, opts: Options{Auth: tc.auth, HandshakeTimeout: budget}})
		}
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, h[key].addr())
			c.Write(tc.msg)
			got := readAll(t, c) // the client sends nothing more and waits
			if !strings.HasPrefix(string(got), tc.reply) || (tc.reply == "" && len(got) != 0) {
				t.Fatalf("client got %q, want %q…", got, tc.reply)
			}
			if r := h[key].result(t); !errors.Is(r.err, ErrHandshakeTimeout) {
				t.Fatalf("error %v, want ErrHandshakeTimeout", r.err)
			}
		})
	}
	t.Run("slow-dial-ok", func(t *testing.T) {
		hs := startHarness(t, &harness{kind: SOCKS5, dial: slowDial, opts: Options{HandshakeTimeout: budget}})
		c := dialTCP(t, hs.addr())
		c.Write(cat(greetNoAuth, socksReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, eport), []byte("x")))
		got := make([]byte, 2+10+1)
		if _, err := io.ReadFull(c, got); err != nil || got[3] != 0 || got[12] != 'x' {
			t.Fatalf("got % x, %v", got, err)
		}
		if r := hs.result(t); r.err != nil {
			t.Fatal(r.err)
		}
	})
	t.Run("http-later-request", func(t *testing.T) {
		o := startOrigin(t, nil)
		host := "127.0.0.1:" + strconv.Itoa(o.port(t))
		hs := startHarness(t, &harness{kind: HTTP, dial: (&dialer{}).dial, opts: Options{HandshakeTimeout: budget}})
		c := dialTCP(t, hs.addr())
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET http://%s/a HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		fmt.Fprintf(c, "GET http://%s/b HTTP/1.1\r\nHost: ", host) // and no more
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 408 || !resp.Close {
			t.Fatalf("status %d close=%v, want 408 and close", resp.StatusCode, resp.Close)
		}
		expectClosed(t, c, br)
		if err := hs.forwarded(t); !errors.Is(err, ErrHandshakeTimeout) {
			t.Fatalf("ServeForward: %v, want ErrHandshakeTimeout", err)
		}
		hs.result(t)
	})
}

// TestHTTPMaxHeaderBytesOption: Options.MaxHeaderBytes replaces the default, for the first request
// and the later ones.
func TestHTTPMaxHeaderBytesOption(t *testing.T) {
	o := startOrigin(t, nil)
	host := "127.0.0.1:" + strconv.Itoa(o.port(t))
	h := startHarness(t, &harness{kind: HTTP, dial: (&dialer{}).dial, opts: Options{MaxHeaderBytes: 1 << 10}})
	req := func(pad int) string {
		return fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nX-Pad: %s\r\n\r\n", host, host, strings.Repeat("p", pad))
	}
	if resp, _ := httpExchange(t, h, req(2000)); resp == nil || resp.StatusCode != 431 {
		t.Fatalf("response %v, want 431", resp)
	}
	if r := h.result(t); !errors.Is(r.err, ErrHeaderTooLarge) {
		t.Fatalf("error %v", r.err)
	}
	c := dialTCP(t, h.addr())
	br := bufio.NewReader(c)
	io.WriteString(c, req(800))
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, req(1100))
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 431 {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	expectClosed(t, c, br)
	if err := h.forwarded(t); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("ServeForward: %v", err)
	}
	h.result(t)
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
