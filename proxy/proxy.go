// Package proxy speaks the SOCKS5 and HTTP proxy protocols to local clients.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// Kind is the protocol a local proxy listener speaks.
type Kind uint8

// Proxy protocols.
const (
	SOCKS5 Kind = iota + 1
	HTTP
)

// String returns "socks5" or "http".
func (k Kind) String() string {
	switch k {
	case SOCKS5:
		return "socks5"
	case HTTP:
		return "http"
	default:
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Target is where a client asked to go: Host is an IP literal or a domain name.
type Target struct {
	Host string
	Port uint16
}

// String returns the target in net.JoinHostPort form.
func (t Target) String() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// DialFunc connects to t, normally through the tunnel. Domain names are passed
// unresolved; the exit resolves them.
type DialFunc func(ctx context.Context, t Target) (net.Conn, error)

// Session is a handshake that succeeded: the client is now connected to Upstream.
type Session struct {
	Target   Target
	Upstream net.Conn // owned by the caller from here on (by ServeForward for a Forward session)
	// Client reads what the client sends from here on, including bytes it sent beyond the
	// handshake that were already buffered; use it instead of reading the raw client conn.
	// It is the client conn itself when nothing was buffered. Nil for a Forward session.
	Client io.Reader
	// Forward is set for a plain-HTTP (absolute-URI) request: its head has been read, checked and
	// authenticated and Upstream dialled to its origin, but nothing has been sent upstream yet.
	// Instead of relaying bytes, the caller runs ServeForward, which forwards this request and
	// every later one on the client connection.
	Forward bool
	Method  string // HTTP method ("CONNECT", "GET", …), or "CONNECT" or "UDP ASSOCIATE" for SOCKS5
	// UDP is set for a SOCKS5 UDP ASSOCIATE (Options.Associate opened its tunnel side): the relay
	// socket named in the reply, owned by the caller. Upstream is nil; Client is the control
	// connection, whose end ends the association.
	UDP *UDPSession

	fwd *forwardState // Forward: what ServeForward continues from
}

// Errors returned (wrapped) by Handshake and Refuse.
var (
	// ErrBadRequest marks a malformed client request.
	ErrBadRequest = errors.New("proxy: bad request")
	// ErrUnsupported marks a well-formed request this proxy does not serve: SOCKS5 BIND or
	// UDP ASSOCIATE, an unknown address type, no acceptable auth method, https:// absolute URIs.
	ErrUnsupported = errors.New("proxy: unsupported request")
	// ErrHeaderTooLarge marks an HTTP request whose header exceeds MaxHeaderBytes; it also
	// wraps ErrBadRequest.
	ErrHeaderTooLarge = fmt.Errorf("%w: request header too large", ErrBadRequest)
	// ErrDial marks a failed dial of a request's target; the dial's own error is wrapped too
	// (ReplyCodeOf finds its reply code).
	ErrDial = errors.New("proxy: dial failed")
	// errNoConn is returned when a DialFunc returns neither a conn nor an error.
	errNoConn = errors.New("proxy: dial returned no connection")
	// errNoReason stands in for a nil error passed to Refuse.
	errNoReason = errors.New("proxy: refused")
)

// MaxHeaderBytes is the default bound of an HTTP proxy request's request line and header
// section (Options.MaxHeaderBytes).
const MaxHeaderBytes = 64 << 10

// Handshake is HandshakeWith with zero Options: no authentication, default limits.
func Handshake(ctx context.Context, kind Kind, client net.Conn, dial DialFunc) (*Session, error) {
	return HandshakeWith(ctx, kind, client, dial, Options{})
}

// HandshakeWith speaks kind's protocol on client until the upstream is connected: the SOCKS5
// greeting, authentication (opts.Auth) and CONNECT request, or an HTTP request head (CONNECT, or
// an absolute http:// URI: a Forward session for ServeForward). On failure it has already written
// the matching reply (SOCKS5 reply code, or HTTP status with a short text body: a dial error's own
// HTTPStatus() int if it has one, else HTTPStatus(ReplyCodeOf(err))) when the protocol allows one,
// and returns an error that wraps the cause (errors.Is/As work: dial errors, ErrDial,
// ErrBadRequest, ErrAuth, ErrHandshakeTimeout, …).
//
// The client must finish what it has to say (greeting, authentication and request; or the
// request head) within opts.HandshakeTimeout, else ErrHandshakeTimeout (SOCKS5: closed without a
// reply; HTTP: 408 if part of a head came). ctx bounds the whole handshake, including the dial:
// the client's deadline is set from it and cleared on return; cancelling ctx interrupts it. The
// failure reply to a failed dial is written with its own short deadline (replyGrace) so that it
// goes out even when ctx ran out.
func HandshakeWith(ctx context.Context, kind Kind, client net.Conn, dial DialFunc, opts Options) (*Session, error) {
	if dial == nil {
		return nil, errors.New("proxy: nil DialFunc")
	}
	return handshake(ctx, kind, client, dial, opts)
}

// Refuse is RefuseWith with zero Options.
func Refuse(ctx context.Context, kind Kind, client net.Conn, err error) error {
	return RefuseWith(ctx, kind, client, err, Options{})
}

// RefuseWith reads the client's request (authenticating it as HandshakeWith does) and refuses it
// with err's reply without dialing: the SOCKS5 reply code is ReplyCodeOf(err); the HTTP status is
// err's HTTPStatus() int when it has one in 400–599, else HTTPStatus(ReplyCodeOf(err)). A nil err
// refuses with a general failure. The returned error wraps err (or the request's own error if it
// was malformed, ErrAuth if its credentials were wrong).
func RefuseWith(ctx context.Context, kind Kind, client net.Conn, err error, opts Options) error {
	if err == nil {
		err = errNoReason
	}
	if opts.Associate != nil { // a UDP ASSOCIATE is refused with err's reply too
		opts.Associate = func(context.Context) error { return err }
	}
	s, herr := handshake(ctx, kind, client, func(context.Context, Target) (net.Conn, error) {
		return nil, err
	}, opts)
	if s != nil { // cannot happen: the dial never succeeds
		closeQuietly(s.Upstream)
	}
	return herr
}

func handshake(ctx context.Context, kind Kind, client net.Conn, dial DialFunc, opts Options) (s *Session, err error) {
	if client == nil {
		return nil, errors.New("proxy: nil client conn")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	g := newGuard(ctx, client)
	defer func() {
		g.release()
		if cerr := ctxErr(ctx); err != nil && cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
	}()
	switch kind {
	case SOCKS5:
		return socks5Handshake(ctx, g, client, dial, opts)
	case HTTP:
		return httpHandshake(ctx, g, client, dial, opts)
	default:
		return nil, fmt.Errorf("proxy: handshake kind %s: %w", kind, ErrUnsupported)
	}
}

// ctxErr is ctx's cause once ctx is done or its deadline has passed: conn deadlines set from
// ctx can fire just before ctx's own timer.
func ctxErr(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// dialTarget calls dial and turns a missing conn into an error.
func dialTarget(ctx context.Context, dial DialFunc, t Target) (net.Conn, error) {
	c, err := dial(ctx, t)
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("proxy: dial %s: %w: %w", t, ErrDial, err)
	}
	if c == nil {
		return nil, fmt.Errorf("proxy: dial %s: %w: %w", t, ErrDial, errNoConn)
	}
	return c, nil
}

// HTTPStatus maps a reply code to the HTTP proxy's status: NotAllowed→403, TTLExpired→504,
// AddressNotSupported→400, CommandNotSupported→501, Succeeded→200, others (refused, unreachable,
// general)→502.
func HTTPStatus(code messages.ReplyCode) int {
	switch code {
	case messages.ReplySucceeded:
		return http.StatusOK
	case messages.ReplyNotAllowed:
		return http.StatusForbidden
	case messages.ReplyTTLExpired:
		return http.StatusGatewayTimeout
	case messages.ReplyAddressNotSupported:
		return http.StatusBadRequest
	case messages.ReplyCommandNotSupported:
		return http.StatusNotImplemented
	default:
		return http.StatusBadGateway
	}
}

// ReplyCodeOf returns err's reply code: from the ReplyCode interface if present (a non-nil error
// claiming success counts as a general failure), context.DeadlineExceeded or a net timeout →
// ReplyTTLExpired, ECONNREFUSED/EHOSTUNREACH/ENETUNREACH and DNS errors → the matching code,
// nil → ReplySucceeded, else ReplyGeneralFailure.
func ReplyCodeOf(err error) messages.ReplyCode {
	if err == nil {
		return messages.ReplySucceeded
	}
	var rc interface{ ReplyCode() messages.ReplyCode }
	if errors.As(err, &rc) {
		if c := rc.ReplyCode(); c != messages.ReplySucceeded {
			return c
		}
		return messages.ReplyGeneralFailure
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return messages.ReplyTTLExpired
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return messages.ReplyTTLExpired
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return messages.ReplyConnectionRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.As(err, &dnsErr):
		return messages.ReplyHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return messages.ReplyNetworkUnreachable
	}
	return messages.ReplyGeneralFailure
}

// failureCode is the reply code for a failed request: never ReplySucceeded.
func failureCode(err error) messages.ReplyCode {
	if c := ReplyCodeOf(err); c != messages.ReplySucceeded {
		return c
	}
	return messages.ReplyGeneralFailure
}

// statusOf is the HTTP status for a failed request.
func statusOf(err error) int {
	var hs interface{ HTTPStatus() int }
	if errors.As(err, &hs) {
		if s := hs.HTTPStatus(); s >= 400 && s <= 599 {
			return s
		}
	}
	return HTTPStatus(failureCode(err))
}

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// guard applies ctx to the conns of a handshake: their deadlines follow ctx's deadline, and
// cancelling ctx interrupts blocked reads and writes. release clears the deadlines.
type guard struct {
	ctx      context.Context
	stop     func() bool
	mu       sync.Mutex
	conns    [2]net.Conn
	n        int
	expired  bool
	released bool
	graced   net.Conn // given a reply window after ctx ended; cleared by release
}

func newGuard(ctx context.Context, c net.Conn) *guard {
	g := &guard{ctx: ctx}
	g.add(c)
	g.stop = context.AfterFunc(ctx, g.expire)
	return g
}

// add puts c under the guard; at most two conns (client and upstream) are tracked.
func (g *guard) add(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.released || g.n == len(g.conns) {
		return
	}
	g.conns[g.n] = c
	g.n++
	switch d, ok := g.ctx.Deadline(); {
	case g.expired:
		c.SetDeadline(aLongTimeAgo)
	case ok:
		c.SetDeadline(d)
	}
}

func (g *guard) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expired = true
	for _, c := range g.conns[:g.n] {
		c.SetDeadline(aLongTimeAgo)
	}
}

// limitRead makes c's reads end by the earlier of d and ctx's deadline (a zero d: ctx's deadline
// alone again), unless ctx has already ended.
func (g *guard) limitRead(c net.Conn, d time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.expired || g.released {
		return
	}
	if cd, ok := g.ctx.Deadline(); ok && (d.IsZero() || cd.Before(d)) {
		d = cd
	}
	c.SetReadDeadline(d)
}

// handshakeExpired tells whether a read error is the handshake budget running out (rather than
// ctx, or the connection failing).
func handshakeExpired(ctx context.Context, err error, deadline time.Time) bool {
	return isTimeout(err) && ctxErr(ctx) == nil && !time.Now().Before(deadline)
}

// release stops watching ctx and clears the deadlines of the guarded conns. Once it returns no
// deadline will be set on them any more.
func (g *guard) release() {
	g.stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.released = true
	for i, c := range g.conns[:g.n] {
		c.SetDeadline(time.Time{})
		g.conns[i] = nil
	}
	g.n = 0
	if g.graced != nil {
		g.graced.SetDeadline(time.Time{})
		g.graced = nil
	}
}

// replyGrace bounds writing the failure reply that ends a handshake, independently of its ctx.
const replyGrace = time.Second

// replyWindow lets the failure reply that ends a handshake be written even if ctx has ended
// (e.g. "timed out" after the dial used it up): it stops applying ctx and gives c's I/O
// replyGrace. The handshake's final release clears the deadline.
func (g *guard) replyWindow(c net.Conn) {
	g.release()
	g.mu.Lock()
	defer g.mu.Unlock()
	c.SetDeadline(time.Now().Add(replyGrace))
	g.graced = c
}

// parseHost validates a requested host: an IP literal (returned in canonical form, IPv4-mapped
// addresses unmapped, zones rejected) or a domain name of 1–255 letters, digits, '-', '.', '_'.
// Names are never resolved here.
func parseHost(h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("%w: empty host", ErrBadRequest)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("%w: host %q has a zone", ErrBadRequest, h)
		}
		return a.Unmap().String(), nil
	}
	if len(h) > 255 {
		return "", fmt.Errorf("%w: host name too long", ErrBadRequest)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '-' || c == '.' || c == '_' {
			continue
		}
		return "", fmt.Errorf("%w: invalid host name %q", ErrBadRequest, h)
	}
	return h, nil
}

// parsePort parses a decimal port in 1–65535.
func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: invalid port %q", ErrBadRequest, p)
	}
	return uint16(n), nil
}

// Counter receives byte counts as they are accepted by the receiving socket; *atomic.Int64 is one.
type Counter interface{ Add(delta int64) (new int64) }

// bufPool holds the buffers that move bodies and upgraded streams (never per read).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func closeQuietly(c net.Conn) {
	if c != nil {
		c.Close()
	}
}

// resetConn ends c with a reset where the transport allows it (kernel TCP, netstack conns with
// Abort), else closes it.
func resetConn(c net.Conn) {
	switch c := c.(type) {
	case nil:
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	case interface{ Abort() error }:
		c.Abort()
	default:
		c.Close()
	}
}

func halfClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

// clientReader returns a reader yielding buffered first, then the rest from c. With nothing
// buffered it is c itself, so the caller's copy loop can use c's fast paths.
func clientReader(buffered []byte, c net.Conn) io.Reader {
	if len(buffered) == 0 {
		return c
	}
	return io.MultiReader(bytes.NewReader(buffered), c)
}
