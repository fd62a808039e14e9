package test

// Helpers for the connection-lifecycle tests (conn_*_test.go): tunnels with custom limits, raw
// SOCKS5, small TCP servers on 127.0.0.1, stats polling and a log-capturing slog handler.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// pollFor is how long an expected event may take to show.
const pollFor = 10 * time.Second

// connEnv is an exit engine with one client tunnel to itself.
type connEnv struct {
	e   *engine.Engine
	tun *engine.Tunnel
}

// newConnEnv starts an exit engine (loopback egress allowed unless exit changes it) and opens a
// tunnel to it whose spec the caller may adjust.
func newConnEnv(t testing.TB, exitID string, exit func(*engine.Config), spec func(*engine.TunnelSpec)) *connEnv {
	t.Helper()
	e := startExitEngine(t, exitID, exit)
	s := engine.TunnelSpec{Exit: exitID, SOCKS: "127.0.0.1:0", HTTP: "127.0.0.1:0", UDPBind: "127.0.0.1"}
	if spec != nil {
		spec(&s)
	}
	return &connEnv{e: e, tun: openTunnelSpec(t, e, s)}
}

// poll calls get every testutil.Tick until ok accepts its result, for at most pollFor; a failure
// shows the last value as fmtAny does.
func poll[T any](t testing.TB, what string, get func(context.Context) (T, error), ok func(T) bool) T {
	t.Helper()
	shownGet := func(ctx context.Context) (shown[T], error) { v, err := get(ctx); return shown[T]{v}, err }
	return testutil.Poll(t, pollFor, what, shownGet, func(s shown[T]) bool { return ok(s.v) }).v
}

// waitFor polls cond every testutil.Tick until it holds, or fails the test after within.
var waitFor = testutil.Eventually

// shown prints a polled value with fmtAny.
type shown[T any] struct{ v T }

func (s shown[T]) String() string { return fmtAny(s.v) }

func fmtAny(v any) string {
	switch v := v.(type) {
	case messages.ConnectionStats:
		return fmtStats(v)
	case engine.Stats:
		return "client{" + fmtStats(v.Client) + "} exit{" + fmtStats(v.Exit) + "}"
	}
	return fmt.Sprintf("%+v", v)
}

func fmtStats(s messages.ConnectionStats) string {
	return fmt.Sprintf("active=%d opened=%d ended=%d in=%v out=%v bytes=%d/%d", s.Active, s.Opened, s.Ended,
		ends(s, messages.SideIncoming), ends(s, messages.SideOutgoing), s.Bytes.In, s.Bytes.Out)
}

// ends is one side's counts by reason, without zero entries.
type endCounts map[messages.EndReason]uint64

func ends(s messages.ConnectionStats, side messages.Side) endCounts {
	out := endCounts{}
	for r, n := range s.ByEnd[side] {
		if n != 0 {
			out[r] = n
		}
	}
	return out
}

func (e endCounts) String() string {
	keys := slices.Sorted(maps.Keys(e))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, e[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// wantEnds checks the exact number of ended connections and the exact counts by reason per side.
func wantEnds(t testing.TB, who string, s messages.ConnectionStats, ended uint64, in, out endCounts) {
	t.Helper()
	if s.Ended != ended || !maps.Equal(ends(s, messages.SideIncoming), in) || !maps.Equal(ends(s, messages.SideOutgoing), out) {
		t.Errorf("%s stats: %s; want ended=%d in=%v out=%v", who, fmtStats(s), ended, in, out)
	}
}

// tunnelStats waits until the tunnel has ended at least n connections and has none active.
func (c *connEnv) tunnelStats(t testing.TB, n uint64) messages.ConnectionStats {
	t.Helper()
	return poll(t, "tunnel stats", c.tun.Stats, func(s messages.ConnectionStats) bool { return s.Ended >= n && s.Active == 0 })
}

// settled waits until no connection is active in either role, and returns the engine's stats then:
// the baseline for exitDelta (the tunnel's probe is a connection on the exit).
func settled(t testing.TB, e *engine.Engine) engine.Stats {
	t.Helper()
	return poll(t, "engine stats settle", e.Stats, func(s engine.Stats) bool { return s.Client.Active == 0 && s.Exit.Active == 0 })
}

// engineDelta waits until, since base, the engine has ended at least client and exit connections
// in each role with none active, and returns the difference.
func engineDelta(t testing.TB, e *engine.Engine, base engine.Stats, client, exit uint64) engine.Stats {
	t.Helper()
	get := func(ctx context.Context) (engine.Stats, error) {
		s, err := e.Stats(ctx)
		return engine.Stats{Client: subStats(s.Client, base.Client), Exit: subStats(s.Exit, base.Exit)}, err
	}
	return poll(t, "engine stats", get, func(d engine.Stats) bool {
		return d.Client.Ended >= client && d.Exit.Ended >= exit && d.Client.Active == 0 && d.Exit.Active == 0
	})
}

func subStats(a, b messages.ConnectionStats) messages.ConnectionStats {
	d := messages.ConnectionStats{Active: a.Active, Opened: a.Opened - b.Opened, Ended: a.Ended - b.Ended,
		ByEnd: map[messages.Side]map[messages.EndReason]uint64{messages.SideIncoming: {}, messages.SideOutgoing: {}}}
	d.Bytes.In, d.Bytes.Out = a.Bytes.In-b.Bytes.In, a.Bytes.Out-b.Bytes.Out
	for side, m := range a.ByEnd {
		for r, n := range m {
			d.ByEnd[side][r] = n - b.ByEnd[side][r]
		}
	}
	return d
}

// SOCKS5 reply codes (RFC 1928).
const (
	socksSucceeded      = 0x00
	socksGeneralFailure = 0x01
	socksNotAllowed     = 0x02
	socksConnRefused    = 0x05
	socksTTLExpired     = 0x06
)

// socksConnect speaks SOCKS5 (no auth, CONNECT to an IPv4 host:port) to proxyAddr and returns the
// connection and the reply code; on a failure reply the connection is returned too (caller closes).
// The handshake is bounded by a 10 s deadline, cleared on return (socksRequest).
func socksConnect(proxyAddr, target string) (*net.TCPConn, byte, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().Is4() {
		return nil, 0, fmt.Errorf("target %q: want an IPv4 host:port", target)
	}
	return socksRequest(proxyAddr, socksCmdConnect, ap.Addr().String(), ap.Port())
}

// mustSocks is socksConnect that expects success.
func mustSocks(t testing.TB, proxyAddr, target string) *net.TCPConn {
	t.Helper()
	c, code, err := socksConnect(proxyAddr, target)
	if err != nil {
		t.Fatalf("socks5 connect %s: %v", target, err)
	}
	if code != socksSucceeded {
		c.Close()
		t.Fatalf("socks5 connect %s: reply %#x", target, code)
	}
	return c
}

// roundTrip writes msg and reads the same bytes back (an echo destination), within 10 s.
func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return roundTripRead(c, msg)
}

// readUntilEnd reads and discards until an error, within limit; it returns the error (io.EOF for
// a graceful end), the bytes read and when it ended.
func readUntilEnd(c net.Conn, limit time.Duration) (error, int64, time.Time) {
	_ = c.SetReadDeadline(time.Now().Add(limit))
	defer c.SetReadDeadline(time.Time{})
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		err = io.EOF
	}
	return err, n, time.Now()
}

// startServer runs handle for each connection to a TCP server on 127.0.0.1; it is closed, with
// its connections, at the test's cleanup.
func startServer(t testing.TB, handle testutil.Handler) *testutil.Server {
	t.Helper()
	return testutil.Serve(t, handle)
}

// echoHandler echoes until EOF, then closes.
var echoHandler = testutil.Echo

// streamHandler writes until the connection fails (at most 4 GiB).
func streamHandler(c *net.TCPConn, _ <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for range 1 << 17 {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// tcpState is the kernel's TCP state of c (unix.BPF_TCP_* numbering: 7 close, 8 close-wait).
func tcpState(c *net.TCPConn) (uint8, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st uint8
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr == nil {
			st = info.State
		}
	}); err != nil {
		return 0, err
	}
	return st, gerr
}

const (
	tcpStateEstablished = 1
	tcpStateClose       = 7
	tcpStateCloseWait   = 8
)

// openFDs counts this process's open file descriptors.
func openFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return len(ents), err
}

func goroutines(context.Context) (int, error) { return runtime.NumGoroutine(), nil }

func fds(context.Context) (int, error) { return openFDs() }

// logRecord is one captured "connection ended" line.
type logRecord map[string]slog.Value

func (r logRecord) str(k string) string { return r[k].String() }
func (r logRecord) int(k string) int64  { return r[k].Int64() }

// logCapture is a slog.Handler that keeps every record with one of its messages (by default
// "connection ended" and "connection refused"; any level; the message is under "msg") and passes
// everything on to testLogger's handler.
type logCapture struct {
	store *logStore
	attrs []slog.Attr
	next  slog.Handler
}

type logStore struct {
	keep []string // the messages kept
	mu   sync.Mutex
	recs []logRecord
}

func newLogCapture(keep ...string) *logCapture {
	if len(keep) == 0 {
		keep = []string{"connection ended", "connection refused"}
	}
	return &logCapture{store: &logStore{keep: keep}, next: testLogger().Handler()}
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }

func (h *logCapture) Handle(ctx context.Context, r slog.Record) error {
	if slices.Contains(h.store.keep, r.Message) {
		rec := logRecord{"msg": slog.StringValue(r.Message)}
		for _, a := range h.attrs {
			rec[a.Key] = a.Value.Resolve()
		}
		r.Attrs(func(a slog.Attr) bool { rec[a.Key] = a.Value.Resolve(); return true })
		h.store.mu.Lock()
		h.store.recs = append(h.store.recs, rec)
		h.store.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{store: h.store, attrs: append(slices.Clip(h.attrs), as...), next: h.next.WithAttrs(as)}
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	return &logCapture{store: h.store, attrs: h.attrs, next: h.next.WithGroup(name)} // the engine uses no groups
}

func (h *logCapture) logger() *slog.Logger { return slog.New(h) }

// ended returns the captured records that match.
func (h *logCapture) ended(match func(logRecord) bool) []logRecord {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	var out []logRecord
	for _, r := range h.store.recs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// waitEnded waits until n records match and returns them.
func (h *logCapture) waitEnded(t testing.TB, what string, n int, match func(logRecord) bool) []logRecord {
	t.Helper()
	return poll(t, what, func(context.Context) ([]logRecord, error) { return h.ended(match), nil },
		func(r []logRecord) bool { return len(r) >= n })
}

// role matches the "connection ended" lines of a role.
func role(want string) func(logRecord) bool {
	return func(r logRecord) bool {
		return r.str("msg") == "connection ended" && r.str("role") == want && r.str("target") != "ping"
	}
}

// isTimeoutErr reports whether err is a deadline expiring.
func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
