package proxy

// Plain-HTTP (absolute-URI) forwarding, RFC 9112: every request on a client connection is parsed
// on its own, checked, authenticated and sent to its own origin in origin form; responses are
// re-framed so the client can keep its connection. One upstream connection is kept open at a time
// and reused while requests go to the same host and port.

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
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxRequestsPerConn bounds the requests one client connection carries: the last one is
	// answered with Connection: close.
	maxRequestsPerConn = 10000
	// maxInformational bounds the 1xx responses relayed before a final one.
	maxInformational = 16
	// maxResponseHeader bounds an upstream response head.
	maxResponseHeader = 1 << 20
	// bodyGrace is how long the rest of a request body may take once its response is complete
	// (an origin that answered early); after it both connections are closed.
	bodyGrace = time.Second
	// lingerTime bounds reading and discarding what a client still sends after the proxy closed
	// its side following a final response, so that the close does not reset the response.
	lingerTime = 500 * time.Millisecond
	// lingerReads bounds that discarding in reads (of up to 32 KiB).
	lingerReads = 32
)

// forwardState carries a plain-HTTP session from the handshake to ServeForward.
type forwardState struct {
	hc   *httpConn
	req  *http.Request
	opts Options
	used bool
}

// ServeForward serves a Forward session: it sends the request the handshake read to s.Upstream,
// relays the response, and goes on with the client's later requests — each read within
// HandshakeTimeout of its first byte, checked like the first (framing, version, Options.Auth) and
// sent to its own origin, over the current upstream connection when the host and port are the
// same, else over a new one dialled with dial (the previous one is closed). Hop-by-hop headers are
// removed both ways; Connection: close from either side is honoured; an upgrade (101, e.g.
// WebSocket) or a CONNECT turns the connection into a two-way relay until both sides end.
// Options.OnRequest hears of every request.
//
// It returns when the client connection is over: nil when the client ended it between requests
// or a Connection: close was served; else the error that ended it (a refused request:
// ErrBadRequest, ErrUnsupported, ErrHeaderTooLarge, ErrAuth, ErrHandshakeTimeout; a failed dial:
// ErrDial; or an I/O error of the client or an upstream). The client has had its answer and is
// closed for writing, or reset when a response it was receiving broke off; the caller closes it.
// The upstream is closed. Cancelling ctx ends it at once: the upstream is reset and I/O on the
// client interrupted.
//
// in and out (either may be nil) count bytes as they are accepted: in by the upstreams (requests
// and upgraded streams), out by the client (forwarded responses; not the proxy's own replies).
func ServeForward(ctx context.Context, s *Session, dial DialFunc, in, out Counter) error {
	if s == nil || !s.Forward || s.fwd == nil || s.fwd.used {
		return errors.New("proxy: ServeForward needs a Forward session, once")
	}
	s.fwd.used = true
	if ctx == nil {
		ctx = context.Background()
	}
	f := &forwarder{ctx: ctx, hc: s.fwd.hc, opts: s.fwd.opts, dial: dial}
	f.cw = countWriter{w: f.hc.c, total: out}
	f.cbw = bufio.NewWriterSize(&f.cw, httpBufSize)
	f.uw.total = in
	f.ulr = &limitReader{}
	f.ubr = bufio.NewReaderSize(f.ulr, httpBufSize)
	f.ubw = bufio.NewWriterSize(&f.uw, httpBufSize)
	if dial == nil {
		closeQuietly(s.Upstream)
		return errors.New("proxy: nil DialFunc")
	}
	stop := context.AfterFunc(ctx, f.interrupt)
	err := f.setUpstream(s.Upstream, s.Target)
	if err == nil {
		err = f.serve(s.fwd.req, s.Target)
	}
	stop()
	f.dropUpstream(false)
	s.fwd.req = nil
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.Cause(ctx)) {
		err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}
	return err
}

// forwarder is one ServeForward run: the client connection and the current upstream.
type forwarder struct {
	ctx  context.Context
	hc   *httpConn
	opts Options
	dial DialFunc
	cw   countWriter   // the client, counting forwarded response bytes
	cbw  *bufio.Writer // over cw
	hb   bytes.Buffer  // a request head being built

	bodyFailed  atomic.Bool // this exchange's request body failed on the client side
	mu          sync.Mutex  // guards up and interrupted against interrupt
	interrupted bool
	up          net.Conn

	upTarget Target
	upUses   int           // exchanges sent over up
	ulr      *limitReader  // reads up; limits response heads
	ubr      *bufio.Reader // over ulr
	uw       countWriter   // writes up, counting request bytes
	ubw      *bufio.Writer // over uw
}

// countWriter counts what w accepted: n for the current exchange, total for the connection.
type countWriter struct {
	w     io.Writer
	total Counter
	n     int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.total != nil && n > 0 {
		c.total.Add(int64(n))
	}
	return n, err
}

// interrupt runs when ctx ends: it resets the upstream and makes every client read and write fail.
func (f *forwarder) interrupt() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.interrupted = true
	resetConn(f.up)
	f.hc.c.SetDeadline(aLongTimeAgo)
}

func (f *forwarder) isInterrupted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.interrupted
}

// clientReadDeadline sets the client's read deadline unless ctx has ended.
func (f *forwarder) clientReadDeadline(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.interrupted {
		f.hc.c.SetReadDeadline(t)
	}
}

// bodyDeadline bounds the request body still being sent: reading the client, writing up.
func (f *forwarder) bodyDeadline(up net.Conn, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.interrupted {
		f.hc.c.SetReadDeadline(t)
		if up != nil {
			up.SetWriteDeadline(t)
		}
	}
}

// setUpstream makes c the current upstream to t.
func (f *forwarder) setUpstream(c net.Conn, t Target) error {
	f.mu.Lock()
	if f.interrupted {
		f.mu.Unlock()
		resetConn(c)
		return fmt.Errorf("proxy: http forward: %w", context.Cause(f.ctx))
	}
	f.up = c
	f.mu.Unlock()
	f.upTarget, f.upUses = t, 0
	*f.ulr = limitReader{r: c}
	f.ulr.unlimit()
	f.ubr.Reset(f.ulr)
	f.uw.w = c
	f.ubw.Reset(&f.uw)
	return nil
}

// dropUpstream closes the current upstream (reset: with a reset), if any.
func (f *forwarder) dropUpstream(reset bool) {
	f.mu.Lock()
	c := f.up
	f.up = nil
	f.mu.Unlock()
	if reset {
		resetConn(c)
	} else {
		closeQuietly(c)
	}
}

func (f *forwarder) log(rl RequestLog) {
	if f.opts.OnRequest != nil {
		f.opts.OnRequest(rl)
	}
}

// serve runs the request loop from the handshake's request on.
func (f *forwarder) serve(req *http.Request, t Target) error {
	for n := 1; ; n++ {
		start := time.Now()
		rl := RequestLog{Method: req.Method, Target: t}
		keep, err := f.exchange(req, t, &rl, n >= maxRequestsPerConn)
		rl.Duration, rl.Err = time.Since(start), err
		f.log(rl)
		if err != nil || !keep {
			return err
		}
		if req, t, err = f.next(); req == nil {
			return err
		}
	}
}

// next reads and checks the client's next request. It returns nil, nil when the client ended the
// connection between requests; a refused request has been answered and logged.
func (f *forwarder) next() (*http.Request, Target, error) {
	if _, err := f.hc.br.Peek(1); err != nil {
		if err == io.EOF {
			return nil, Target{}, nil
		}
		return nil, Target{}, fmt.Errorf("proxy: http read request: %w", err)
	}
	start := time.Now()
	deadline := start.Add(f.opts.handshakeTimeout())
	f.clientReadDeadline(deadline)
	req, err := f.hc.readRequest(f.opts.maxHeaderBytes())
	f.clientReadDeadline(time.Time{})
	var t Target
	var ref refusal
	if err != nil {
		expired := !f.isInterrupted() && isTimeout(f.hc.lr.err) && !time.Now().Before(deadline)
		ref.status, err = f.hc.readError(err, expired)
		ref.msg = statusMessage(ref.status)
	} else {
		t, ref, err = checkRequest(req, f.hc.head, f.opts)
		f.hc.releaseHead()
	}
	if err == nil {
		return req, t, nil
	}
	rl := RequestLog{Status: ref.status, Duration: time.Since(start), Err: err}
	if req != nil {
		rl.Method = req.Method
	}
	if ref.status != 0 {
		ref.write(f.hc.c)
		f.closeClient()
	}
	f.log(rl)
	return nil, Target{}, err
}

// closeClient ends the client connection after a final response: FIN, then what the client still
// sends is read and discarded for a moment (bounded), so that the close does not reset the
// response in flight.
func (f *forwarder) closeClient() {
	halfClose(f.hc.c)
	f.clientReadDeadline(time.Now().Add(lingerTime))
	bufp := bufPool.Get().(*[]byte)
	for range lingerReads {
		if _, err := f.hc.br.Read(*bufp); err != nil {
			break
		}
	}
	bufPool.Put(bufp)
}

// bodyResult is how sending a request body ended.
type bodyResult struct {
	err    error
	client bool // the client side failed (err), not the upstream
}

// exchange forwards one request and relays its response. keep tells whether the client
// connection may carry another request.
func (f *forwarder) exchange(req *http.Request, t Target, rl *RequestLog, last bool) (keep bool, err error) {
	f.uw.n, f.cw.n = 0, 0
	f.bodyFailed.Store(false)
	defer func() { rl.BytesIn, rl.BytesOut = f.uw.n, f.cw.n }()
	if req.Method == http.MethodConnect {
		return false, f.connect(t, rl)
	}

	http11 := req.ProtoAtLeast(1, 1)
	upgrade := ""
	if http11 && headerHasToken(req.Header, "Connection", "upgrade") {
		if u := strings.Join(req.Header.Values("Upgrade"), ", "); u != "" && !strings.EqualFold(u, "h2c") {
			upgrade = u // h2c needs HTTP2-Settings, a hop-by-hop header: not relayed
		}
	}
	clientClose := req.Close || last
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := len(req.TransferEncoding) > 0
	expect100 := hasBody && http11 && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
	_, hadCL := req.Header["Content-Length"]
	removeHopByHop(req.Header)
	for _, h := range []string{"Expect", "Content-Length", "Host"} {
		req.Header.Del(h)
	}
	f.requestHead(req, hadCL, chunked, clientClose, upgrade)

	// Send the head (and the body, from its own goroutine) and read the response. A reused
	// upstream the origin closed while idle fails before any response byte: a request without a
	// body is sent once more over a new connection.
	var (
		resp    *http.Response
		werrc   chan bodyResult
		nothing bool
	)
	for attempt := 0; ; attempt++ {
		if err := f.ensureUpstream(t); err != nil {
			rl.Status = statusOf(err)
			writeDialError(f.hc.c, err)
			f.closeClient()
			return false, err
		}
		reused := f.upUses > 0
		f.upUses++
		_, err = f.ubw.Write(f.hb.Bytes())
		if hasBody {
			if err == nil && expect100 && attempt == 0 {
				// The origin is reachable: ask for the body (its own 100, were Expect forwarded,
				// would come after it has the head, which is the same).
				if _, cerr := io.WriteString(f.hc.c, "HTTP/1.1 100 Continue\r\n\r\n"); cerr != nil {
					f.dropUpstream(true)
					return false, fmt.Errorf("proxy: http write 100 Continue: %w", cerr)
				}
			}
			if err == nil {
				werrc = make(chan bodyResult, 1)
				go func(up net.Conn) { werrc <- f.writeBody(req, chunked, up) }(f.up)
			}
		} else if err == nil {
			err = f.ubw.Flush()
		}
		if err == nil {
			resp, nothing, err = f.readResponse(req)
		} else {
			err, nothing = fmt.Errorf("proxy: http write request to %s: %w", t, err), true
		}
		if err != nil && nothing && reused && !hasBody && attempt == 0 && !f.isInterrupted() && isConnReset(err) {
			f.dropUpstream(true)
			continue
		}
		break
	}
	if err != nil {
		// No response. If the body failed on the client side, that is why (the body's goroutine
		// reset the upstream); else stop the body, and answer the client.
		f.dropUpstream(true)
		if werrc != nil {
			if f.bodyFailed.Load() {
				return false, f.clientBodyFailed((<-werrc).err, rl)
			}
			f.clientReadDeadline(aLongTimeAgo)
			<-werrc
		}
		rl.Status = statusOf(err)
		writeHTTPError(f.hc.c, rl.Status, "the origin did not answer")
		f.closeClient()
		return false, err
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		return false, f.switchProtocols(req, resp, upgrade, werrc, rl)
	}
	// A body that failed already: the client connection cannot carry another request.
	var w bodyResult
	if werrc != nil {
		select {
		case w = <-werrc:
			werrc = nil
			if w.err != nil {
				clientClose = true
			}
		default:
		}
	}
	closeDelimited, err := f.writeResponse(req, resp, clientClose)
	rl.Status = resp.StatusCode
	if err != nil {
		if werrc != nil {
			f.clientReadDeadline(aLongTimeAgo)
			<-werrc
		}
		return false, err
	}
	if werrc != nil { // the origin answered before it had the whole body: give it a moment
		select {
		case w = <-werrc:
		default:
			up := f.up
			f.bodyDeadline(up, time.Now().Add(bodyGrace))
			w = <-werrc
			f.bodyDeadline(up, time.Time{})
		}
	}
	if resp.Close || w.err != nil || f.ubr.Buffered() > 0 {
		f.dropUpstream(w.err != nil)
	}
	if w.err != nil {
		f.closeClient()
		if w.client {
			return false, f.clientBodyErr(w.err)
		}
		return false, nil // the origin stopped reading the body; the client has its answer
	}
	if clientClose || closeDelimited {
		f.closeClient()
		return false, nil
	}
	return true, nil
}

// clientBodyFailed answers a request whose body the client did not send right: 400 when it was
// malformed or cut short (the connection is still there to answer), nothing when the client's
// connection failed.
func (f *forwarder) clientBodyFailed(err error, rl *RequestLog) error {
	err = f.clientBodyErr(err)
	if errors.Is(err, ErrBadRequest) {
		rl.Status = http.StatusBadRequest
		writeHTTPError(f.hc.c, http.StatusBadRequest, "malformed request body")
		f.closeClient()
	}
	return err
}

// clientBodyErr wraps a failure reading a request body: the client's connection failing (its I/O
// error), or a body that was malformed or cut short (ErrBadRequest).
func (f *forwarder) clientBodyErr(err error) error {
	if lerr := f.hc.lr.err; lerr != nil && lerr != io.EOF {
		return fmt.Errorf("proxy: http read request body: %w", lerr)
	}
	return fmt.Errorf("proxy: http read request body: %w: %w", ErrBadRequest, err)
}

// ensureUpstream makes the current upstream one to t: kept if it already is, else replaced by a
// new one.
func (f *forwarder) ensureUpstream(t Target) error {
	f.mu.Lock()
	have := f.up != nil
	f.mu.Unlock()
	if have && f.upTarget == t {
		return nil
	}
	f.dropUpstream(false)
	c, err := dialTarget(f.ctx, f.dial, t)
	if err != nil {
		return err
	}
	return f.setUpstream(c, t)
}
