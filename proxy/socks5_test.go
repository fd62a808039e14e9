package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	xproxy "golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

var greetNoAuth = []byte{5, 1, 0}

// socksReq builds a request; for atypDomain addr is the name without its length byte.
func socksReq(cmd, atyp byte, addr []byte, port uint16) []byte {
	b := []byte{5, cmd, 0, atyp}
	if atyp == atypDomain {
		b = append(b, byte(len(addr)))
	}
	b = append(b, addr...)
	return binary.BigEndian.AppendUint16(b, port)
}

func domainReq(host string, port uint16) []byte {
	return socksReq(cmdConnect, atypDomain, []byte(host), port)
}

// failReply is the exact reply to a failed request.
func failReply(code messages.ReplyCode) []byte {
	return []byte{5, byte(code), 0, 1, 0, 0, 0, 0, 0, 0}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// socksExchange sends msg, half-closes and returns everything the proxy wrote.
func socksExchange(t *testing.T, h *harness, msg []byte) []byte {
	t.Helper()
	c := dialTCP(t, h.addr())
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	return readAll(t, c)
}

func TestSOCKS5RealClient(t *testing.T) {
	v4 := dataServer(t, "127.0.0.1:0")
	d := &dialer{hosts: map[string]string{"example.test": "127.0.0.1"}}
	h := startProxy(t, SOCKS5, d.dial)
	sd, err := xproxy.SOCKS5("tcp", h.addr(), nil, &net.Dialer{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	p4 := v4.Port()
	cases := []struct {
		name, addr string
		want       Target
	}{
		{"ipv4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p4))), Target{"127.0.0.1", p4}},
		{"domain", net.JoinHostPort("example.test", strconv.Itoa(int(p4))), Target{"example.test", p4}},
	}
	if ln6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln6.Close()
		p6 := dataServer(t, "[::1]:0").Port()
		cases = append(cases, struct {
			name, addr string
			want       Target
		}{"ipv6", net.JoinHostPort("::1", strconv.Itoa(int(p6))), Target{"::1", p6}})
	} else {
		t.Log("no IPv6 loopback; skipping the ipv6 case")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := sd.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			exchange(t, c)
			r := h.result(t)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.s.Target != tc.want || r.s.Method != "CONNECT" || r.s.Forward {
				t.Fatalf("session %+v, want target %v", r.s, tc.want)
			}
			if seen := d.seen(); seen[len(seen)-1] != tc.want {
				t.Fatalf("dialed %v, want %v (names unresolved)", seen[len(seen)-1], tc.want)
			}
		})
	}
}

func TestSOCKS5PipelinedAndBoundAddr(t *testing.T) {
	echo := testutil.EchoServer(t)
	d := &dialer{}
	h := startProxy(t, SOCKS5, d.dial)
	c := dialTCP(t, h.addr())
	// Greeting, request and data in one write: the data must reach upstream intact.
	msg := cat(greetNoAuth, socksReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, echo.Port()), []byte("hello"))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2+10+5)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	r := h.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	la := r.s.Upstream.LocalAddr().(*net.TCPAddr).AddrPort()
	want := cat([]byte{5, 0, 5, 0, 0, 1}, la.Addr().AsSlice(), binary.BigEndian.AppendUint16(nil, la.Port()), []byte("hello"))
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestSOCKS5Targets(t *testing.T) {
	long := strings.Repeat("a", 255)
	cases := []struct {
		name string
		req  []byte
		want Target
	}{
		{"ipv4", socksReq(cmdConnect, atypIPv4, []byte{10, 1, 2, 3}, 80), Target{"10.1.2.3", 80}},
		{"ipv6", socksReq(cmdConnect, atypIPv6, netip.MustParseAddr("2001:db8::1").AsSlice(), 443), Target{"2001:db8::1", 443}},
		{"ipv4-mapped", socksReq(cmdConnect, atypIPv6, netip.MustParseAddr("::ffff:10.0.0.1").AsSlice(), 1), Target{"10.0.0.1", 1}},
		{"domain", domainReq("Sub.Example.TEST", 65535), Target{"Sub.Example.TEST", 65535}},
		{"domain-ip", domainReq("192.168.1.1", 22), Target{"192.168.1.1", 22}},
		{"domain-255", domainReq(long, 8080), Target{long, 8080}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []Target
			h := startProxy(t, SOCKS5, func(_ context.Context, tg Target) (net.Conn, error) {
				mu.Lock()
				seen = append(seen, tg)
				mu.Unlock()
				return nil, codeErr(messages.ReplyNotAllowed)
			})
			got := socksExchange(t, h, cat(greetNoAuth, tc.req))
			if want := cat([]byte{5, 0}, failReply(messages.ReplyNotAllowed)); !bytes.Equal(got, want) {
				t.Fatalf("got % x, want % x", got, want)
			}
			if r := h.result(t); !errors.Is(r.err, codeErr(messages.ReplyNotAllowed)) {
				t.Fatalf("error %v", r.err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 || seen[0] != tc.want {
				t.Fatalf("dialed %v, want [%v]", seen, tc.want)
			}
		})
	}
}

func TestSOCKS5DialErrors(t *testing.T) {
	for _, c := range allCodes {
		t.Run(messages.ReplyCodeNames[c.code], func(t *testing.T) {
			h := startProxy(t, SOCKS5, func(context.Context, Target) (net.Conn, error) {
				return nil, &net.OpError{Op: "dial", Net: "tunnel", Err: codeErr(c.code)}
			})
			got := socksExchange(t, h, cat(greetNoAuth, domainReq("example.test", 443)))
			if want := cat([]byte{5, 0}, failReply(c.code)); !bytes.Equal(got, want) {
				t.Fatalf("got % x, want % x", got, want)
			}
			var ce codeErr
			if r := h.result(t); !errors.As(r.err, &ce) || ce != codeErr(c.code) {
				t.Fatalf("error %v does not carry code %d", r.err, c.code)
			}
		})
	}
	t.Run("real-refused", func(t *testing.T) {
		d := &dialer{}
		h := startProxy(t, SOCKS5, d.dial)
		got := socksExchange(t, h, cat(greetNoAuth, socksReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, testutil.ClosedAddr(t).Port())))
		if want := cat([]byte{5, 0}, failReply(messages.ReplyConnectionRefused)); !bytes.Equal(got, want) {
			t.Fatalf("got % x, want % x", got, want)
		}
		h.result(t)
	})
	t.Run("nil-conn", func(t *testing.T) {
		h := startProxy(t, SOCKS5, func(context.Context, Target) (net.Conn, error) { return nil, nil })
		got := socksExchange(t, h, cat(greetNoAuth, domainReq("example.test", 443)))
		if want := cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)); !bytes.Equal(got, want) {
			t.Fatalf("got % x, want % x", got, want)
		}
		if r := h.result(t); !errors.Is(r.err, errNoConn) {
			t.Fatalf("error %v", r.err)
		}
	})
}

// blockingDial waits for ctx to end, like a dial through a tunnel that never answers.
func blockingDial(ctx context.Context, _ Target) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestSOCKS5HandshakeDeadlineDuringDial(t *testing.T) {
	h := startHarness(t, &harness{kind: SOCKS5, dial: blockingDial, timeout: testTimeout / 100})
	got := socksExchange(t, h, cat(greetNoAuth, domainReq("slow.test", 443)))
	if want := cat([]byte{5, 0}, failReply(messages.ReplyTTLExpired)); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	if r := h.result(t); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want DeadlineExceeded", r.err)
	}
}

func TestSOCKS5Malformed(t *testing.T) {
	ip := []byte{127, 0, 0, 1}
	cases := []struct {
		name  string
		msg   []byte
		reply []byte
		err   error
	}{
		{"empty", nil, nil, io.EOF},
		{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil, ErrBadRequest},
		{"http-on-socks-port", []byte("GET / HTTP/1.1\r\n\r\n"), nil, ErrBadRequest},
		{"no-methods", []byte{5, 0}, []byte{5, 0xFF}, ErrUnsupported},
		{"userpass-only", []byte{5, 2, 1, 2}, []byte{5, 0xFF}, ErrUnsupported},
		{"truncated-greeting", []byte{5}, nil, io.ErrUnexpectedEOF},
		{"truncated-methods", []byte{5, 3, 0}, nil, io.ErrUnexpectedEOF},
		{"no-request", greetNoAuth, []byte{5, 0}, io.EOF},
		{"request-version", cat(greetNoAuth, []byte{4, 1, 0, 1}, ip, []byte{0, 80}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"bad-atyp", cat(greetNoAuth, []byte{5, 1, 0, 5}, ip, []byte{0, 80}), cat([]byte{5, 0}, failReply(messages.ReplyAddressNotSupported)), ErrUnsupported},
		{"atyp-zero", cat(greetNoAuth, []byte{5, 1, 0, 0}), cat([]byte{5, 0}, failReply(messages.ReplyAddressNotSupported)), ErrUnsupported},
		{"bind", cat(greetNoAuth, socksReq(2, atypIPv4, ip, 80)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"udp-associate", cat(greetNoAuth, socksReq(3, atypIPv4, ip, 80)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		// An unsupported command is 0x07 whatever its address: the command is judged first.
		{"udp-associate-any", cat(greetNoAuth, socksReq(3, atypIPv4, []byte{0, 0, 0, 0}, 0)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"udp-associate-any6", cat(greetNoAuth, socksReq(3, atypIPv6, make([]byte, 16), 0)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"bind-any", cat(greetNoAuth, socksReq(2, atypIPv4, []byte{0, 0, 0, 0}, 0)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"bind-empty-domain", cat(greetNoAuth, socksReq(2, atypDomain, nil, 0)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"udp-associate-bad-domain", cat(greetNoAuth, socksReq(3, atypDomain, []byte("a b"), 0)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"udp-associate-bad-atyp", cat(greetNoAuth, []byte{5, 3, 0, 9}), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"unknown-command", cat(greetNoAuth, socksReq(9, atypIPv4, ip, 80)), cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)), ErrUnsupported},
		{"port-zero", cat(greetNoAuth, socksReq(cmdConnect, atypIPv4, ip, 0)), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"empty-domain", cat(greetNoAuth, domainReq("", 80)), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"domain-space", cat(greetNoAuth, domainReq("a b.test", 80)), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"domain-nul", cat(greetNoAuth, domainReq("a\x00.test", 80)), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"domain-zone", cat(greetNoAuth, domainReq("fe80::1%eth0", 80)), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), ErrBadRequest},
		{"truncated-header", cat(greetNoAuth, []byte{5, 1}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
		{"truncated-ipv4", cat(greetNoAuth, []byte{5, 1, 0, 1, 127, 0}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
		{"truncated-ipv6", cat(greetNoAuth, []byte{5, 1, 0, 4, 0, 0, 0}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
		{"truncated-domain", cat(greetNoAuth, []byte{5, 1, 0, 3, 10, 'a', 'b', 'c'}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
		{"truncated-domain-len", cat(greetNoAuth, []byte{5, 1, 0, 3}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
		{"truncated-port", cat(greetNoAuth, []byte{5, 1, 0, 1}, ip, []byte{0}), cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)), io.ErrUnexpectedEOF},
	}
	var dials int
	var mu sync.Mutex
	h := startProxy(t, SOCKS5, func(context.Context, Target) (net.Conn, error) {
		mu.Lock()
		dials++
		mu.Unlock()
		return nil, errors.New("must not dial")
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := socksExchange(t, h, tc.msg)
			if !bytes.Equal(got, tc.reply) {
				t.Fatalf("reply % x, want % x", got, tc.reply)
			}
			r := h.result(t)
			if !errors.Is(r.err, tc.err) {
				t.Fatalf("error %v, want %v", r.err, tc.err)
			}
			if errors.Is(tc.err, io.ErrUnexpectedEOF) && !errors.Is(r.err, ErrBadRequest) {
				t.Fatalf("truncated request: %v is not ErrBadRequest", r.err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 0 {
		t.Fatalf("%d dials for malformed requests", dials)
	}
}

func TestSOCKS5Refuse(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code messages.ReplyCode
	}{
		{"overload", overloadErr{}, messages.ReplyGeneralFailure},
		{"not-allowed", codeErr(messages.ReplyNotAllowed), messages.ReplyNotAllowed},
		{"nil", nil, messages.ReplyGeneralFailure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startRefuser(t, SOCKS5, tc.err)
			got := socksExchange(t, h, cat(greetNoAuth, domainReq("example.test", 443)))
			if want := cat([]byte{5, 0}, failReply(tc.code)); !bytes.Equal(got, want) {
				t.Fatalf("got % x, want % x", got, want)
			}
			r := h.result(t)
			if r.err == nil || (tc.err != nil && !errors.Is(r.err, tc.err)) {
				t.Fatalf("error %v, want %v", r.err, tc.err)
			}
		})
	}
	t.Run("malformed", func(t *testing.T) {
		h := startRefuser(t, SOCKS5, overloadErr{})
		got := socksExchange(t, h, cat(greetNoAuth, socksReq(2, atypIPv4, []byte{1, 2, 3, 4}, 80)))
		if want := cat([]byte{5, 0}, failReply(messages.ReplyCommandNotSupported)); !bytes.Equal(got, want) {
			t.Fatalf("got % x, want % x", got, want)
		}
		if r := h.result(t); !errors.Is(r.err, ErrUnsupported) {
			t.Fatalf("error %v", r.err)
		}
	})
}

// TestHandshakeDeadlineCleared relays after the handshake's ctx has expired: Handshake must
// have cleared the client's deadline.
func TestHandshakeDeadlineCleared(t *testing.T) {
	data := dataServer(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &dialer{}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout/20)
		defer cancel()
		s, err := Handshake(ctx, SOCKS5, c, d.dial)
		if err != nil {
			c.Close()
			done <- err
			return
		}
		<-ctx.Done()
		relay(c, s)
		done <- nil
	}()
	sd, err := xproxy.SOCKS5("tcp", ln.Addr().String(), nil, &net.Dialer{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	c, err := sd.Dial("tcp", data.Addr())
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c)
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeCancelWhileReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, kind := range []Kind{SOCKS5, HTTP} {
		t.Run(kind.String(), func(t *testing.T) {
			c := dialTCP(t, ln.Addr().String())
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			c.Write([]byte{5}) // a first byte, then silence
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := Handshake(ctx, kind, sc, func(context.Context, Target) (net.Conn, error) {
					return nil, errors.New("must not dial")
				})
				done <- err
			}()
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
		})
	}
}
