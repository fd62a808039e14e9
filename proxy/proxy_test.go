package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every blocking step of a test.
const testTimeout = 10 * time.Second

const bigSize = 4 << 20

var (
	upData   = testutil.PayloadBytes(1, bigSize)
	downData = testutil.PayloadBytes(2, bigSize)
)

// codeErr is a dial error carrying a reply code, like the tunnel's.
type codeErr messages.ReplyCode

func (e codeErr) Error() string                 { return "tunnel: " + messages.ReplyCodeNames[messages.ReplyCode(e)] }
func (e codeErr) ReplyCode() messages.ReplyCode { return messages.ReplyCode(e) }

// overloadErr is a connection-limit error: SOCKS5 general failure, HTTP 503.
type overloadErr struct{}

func (overloadErr) Error() string                 { return "too many connections" }
func (overloadErr) ReplyCode() messages.ReplyCode { return messages.ReplyGeneralFailure }
func (overloadErr) HTTPStatus() int               { return 503 }

// dialer dials real 127.0.0.1/::1 targets; names in hosts map to an address, other names are
// unknown (host unreachable). It records the targets it was asked for.
type dialer struct {
	hosts   map[string]string
	mu      sync.Mutex
	targets []Target
}

func (d *dialer) dial(ctx context.Context, t Target) (net.Conn, error) {
	d.mu.Lock()
	d.targets = append(d.targets, t)
	d.mu.Unlock()
	host := t.Host
	if m, ok := d.hosts[host]; ok {
		host = m
	} else if _, err := netip.ParseAddr(host); err != nil {
		return nil, codeErr(messages.ReplyHostUnreachable)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(t.Port))))
}

func (d *dialer) seen() []Target {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Target(nil), d.targets...)
}

type result struct {
	s   *Session
	err error
}

// harness is a proxy listener standing in for the actor that owns it: it calls HandshakeWith (or
// RefuseWith) per connection and relays after success, or runs ServeForward for a Forward session.
type harness struct {
	ln       net.Listener
	kind     Kind
	dial     DialFunc
	opts     Options
	refuse   error // when set, Refuse with it instead of Handshake
	refused  bool
	timeout  time.Duration
	results  chan result
	forwards chan error // ServeForward's outcomes
	udpUp    net.Conn   // a UDP association's tunnel side (socks5_udp_test.go)
	udpCount *udpCount
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startProxy(t testing.TB, kind Kind, dial DialFunc) *harness {
	return startHarness(t, &harness{kind: kind, dial: dial})
}

func startRefuser(t testing.TB, kind Kind, err error) *harness {
	return startHarness(t, &harness{kind: kind, refuse: err, refused: true})
}

func startHarness(t testing.TB, h *harness) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	if h.timeout == 0 {
		h.timeout = testTimeout
	}
	h.results = make(chan result, 256)
	h.forwards = make(chan error, 256)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.conns = map[net.Conn]struct{}{}
	h.wg.Add(1)
	go h.serve()
	t.Cleanup(h.close)
	return h
}

func (h *harness) addr() string { return h.ln.Addr().String() }

func (h *harness) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns[c] = struct{}{}
		h.mu.Unlock()
		h.wg.Add(1)
		go h.handle(c)
	}
}

func (h *harness) handle(c net.Conn) {
	defer h.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	var r result
	if h.refused {
		r.err = RefuseWith(ctx, h.kind, c, h.refuse, h.opts)
	} else {
		r.s, r.err = HandshakeWith(ctx, h.kind, c, h.dial, h.opts)
	}
	cancel()
	if (r.s == nil) == (r.err == nil) {
		r.err = fmt.Errorf("session %v with error %w", r.s, r.err)
	}
	h.results <- r
	if r.s == nil {
		lingerClose(c)
		return
	}
	if r.s.UDP != nil {
		h.serveUDP(c, r.s.UDP)
		return
	}
	if r.s.Forward {
		h.forwards <- ServeForward(h.ctx, r.s, h.dial, nil, nil)
		c.Close()
		return
	}
	relay(c, r.s)
}

// forwarded waits for the next ServeForward outcome.
func (h *harness) forwarded(t testing.TB) error {
	t.Helper()
	return testutil.Await(t, h.forwards, testTimeout, "ServeForward to return")
}

// result waits for the next handshake outcome.
func (h *harness) result(t testing.TB) result {
	t.Helper()
	return testutil.Await(t, h.results, testTimeout, "a handshake result")
}

func (h *harness) close() {
	h.cancel()
	h.ln.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	for {
		select {
		case r := <-h.results:
			if r.s != nil {
				r.s.Upstream.Close()
			}
		default:
			return
		}
	}
}

// relay copies both ways the way the owning actor does.
func relay(c net.Conn, s *Session) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(s.Upstream, s.Client)
		closeWrite(s.Upstream)
	}()
	io.Copy(c, s.Upstream)
	closeWrite(c)
	<-done
	c.Close()
	s.Upstream.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// lingerClose closes after a failed handshake without resetting a client that is still
// sending, so it gets to read the reply.
func lingerClose(c net.Conn) {
	closeWrite(c)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	io.Copy(io.Discard, c)
	c.Close()
}

// dataServer speaks a duplex test protocol: it reads an 8-byte length and that many bytes while
// sending an 8-byte length and downData, then sends the sha256 of what it read.
func dataServer(t testing.TB, addr string) *testutil.Server {
	t.Helper()
	return testutil.ServeAt(t, addr, func(c *net.TCPConn, _ <-chan struct{}) {
		c.SetDeadline(time.Now().Add(testTimeout))
		sumc := make(chan []byte, 1)
		go func() {
			var n [8]byte
			h := sha256.New()
			if _, err := io.ReadFull(c, n[:]); err == nil {
				io.CopyN(h, c, int64(binary.BigEndian.Uint64(n[:])))
			}
			sumc <- h.Sum(nil)
		}()
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(downData)))
		c.Write(n[:])
		c.Write(downData)
		c.Write(<-sumc)
	})
}

// exchange runs the dataServer protocol over c, uploading upData, and checks both directions.
func exchange(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(testTimeout))
	errc := make(chan error, 1)
	go func() {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(upData)))
		_, err := c.Write(append(n[:], upData...))
		errc <- err
	}()
	var n [8]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("read download length: %v", err)
	}
	if got := binary.BigEndian.Uint64(n[:]); got != uint64(len(downData)) {
		t.Fatalf("download length %d, want %d", got, len(downData))
	}
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(len(downData))); err != nil {
		t.Fatalf("download: %v", err)
	}
	if got, want := h.Sum(nil), sha256.Sum256(downData); string(got) != string(want[:]) {
		t.Fatalf("download sha256 %x, want %x", got, want)
	}
	var sum [32]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		t.Fatalf("read upload sum: %v", err)
	}
	if want := sha256.Sum256(upData); sum != want {
		t.Fatalf("upload sha256 %x, want %x", sum, want)
	}
	if err := <-errc; err != nil {
		t.Fatalf("upload: %v", err)
	}
}

func dialTCP(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c.(*net.TCPConn)
}

func port(t testing.TB, ln net.Listener) uint16 {
	t.Helper()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// allCodes are the failure codes with the SOCKS5 byte and HTTP status each must produce.
var allCodes = []struct {
	code   messages.ReplyCode
	status int
}{
	{messages.ReplyGeneralFailure, 502},
	{messages.ReplyNotAllowed, 403},
	{messages.ReplyNetworkUnreachable, 502},
	{messages.ReplyHostUnreachable, 502},
	{messages.ReplyConnectionRefused, 502},
	{messages.ReplyTTLExpired, 504},
	{messages.ReplyCommandNotSupported, 501},
	{messages.ReplyAddressNotSupported, 400},
}

func TestKindAndTarget(t *testing.T) {
	if SOCKS5.String() != "socks5" || HTTP.String() != "http" || Kind(9).String() != "Kind(9)" {
		t.Fatalf("Kind strings: %s %s %s", SOCKS5, HTTP, Kind(9))
	}
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{"example.test", 443}, "example.test:443"},
		{Target{"10.0.0.1", 80}, "10.0.0.1:80"},
		{Target{"2001:db8::1", 8080}, "[2001:db8::1]:8080"},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestReplyCodeOfAndHTTPStatus(t *testing.T) {
	for _, c := range allCodes {
		err := fmt.Errorf("wrapped: %w", codeErr(c.code))
		if got := ReplyCodeOf(err); got != c.code {
			t.Errorf("ReplyCodeOf(%v) = %d, want %d", err, got, c.code)
		}
		if got := HTTPStatus(c.code); got != c.status {
			t.Errorf("HTTPStatus(%d) = %d, want %d", c.code, got, c.status)
		}
	}
	timeoutErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err  error
		want messages.ReplyCode
	}{
		{nil, messages.ReplySucceeded},
		{errors.New("boom"), messages.ReplyGeneralFailure},
		{codeErr(messages.ReplySucceeded), messages.ReplyGeneralFailure},
		{context.DeadlineExceeded, messages.ReplyTTLExpired},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), messages.ReplyTTLExpired},
		{timeoutErr, messages.ReplyTTLExpired},
		{context.Canceled, messages.ReplyGeneralFailure},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, messages.ReplyConnectionRefused},
		{&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, messages.ReplyHostUnreachable},
		{&net.OpError{Op: "dial", Err: syscall.ENETUNREACH}, messages.ReplyNetworkUnreachable},
		{&net.DNSError{Err: "no such host", Name: "x.test", IsNotFound: true}, messages.ReplyHostUnreachable},
	} {
		if got := ReplyCodeOf(tc.err); got != tc.want {
			t.Errorf("ReplyCodeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if HTTPStatus(messages.ReplySucceeded) != 200 {
		t.Error("HTTPStatus(succeeded) != 200")
	}
}

func TestHandshakeArguments(t *testing.T) {
	d := &dialer{}
	h := startProxy(t, Kind(0), d.dial)
	c := dialTCP(t, h.addr())
	if r := h.result(t); !errors.Is(r.err, ErrUnsupported) {
		t.Fatalf("unknown kind: %v, want ErrUnsupported", r.err)
	}
	c.Close()
	if _, err := Handshake(context.Background(), SOCKS5, nil, d.dial); err == nil {
		t.Fatal("nil client: no error")
	}
	if _, err := Handshake(context.Background(), SOCKS5, c, nil); err == nil {
		t.Fatal("nil dial: no error")
	}
}

// readAll reads c to EOF; the conn carries the test deadline.
func readAll(t testing.TB, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}
