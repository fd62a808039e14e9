package proxy

// The wire side of ServeForward: request heads and bodies sent upstream, responses read and
// re-framed for the client, upgrades and CONNECT turned into two-way relays.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// requestHead builds the head sent upstream in f.hb: origin form, HTTP/1.1, Host from the URI,
// the framing net/http parsed, then the remaining (end-to-end) headers.
func (f *forwarder) requestHead(req *http.Request, hadCL, chunked, close bool, upgrade string) {
	b := &f.hb
	b.Reset()
	b.WriteString(req.Method)
	b.WriteByte(' ')
	b.WriteString(req.URL.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(req.URL.Host)
	b.WriteString("\r\n")
	switch {
	case chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			b.WriteString("Trailer: ")
			b.WriteString(strings.Join(slices.Sorted(maps.Keys(req.Trailer)), ", "))
			b.WriteString("\r\n")
		}
	case req.ContentLength > 0 || hadCL:
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.FormatInt(max(req.ContentLength, 0), 10))
		b.WriteString("\r\n")
	}
	switch {
	case close:
		b.WriteString("Connection: close\r\n")
	case upgrade != "":
		b.WriteString("Connection: Upgrade\r\nUpgrade: ")
		b.WriteString(upgrade)
		b.WriteString("\r\n")
	}
	req.Header.Write(b)
	b.WriteString("\r\n")
}

// writeBody sends the rest of the request, its body (re-chunked when chunked, with its
// trailers), to up. It runs in its own goroutine while the response is read. A client-side
// failure resets up: the origin must not take a cut request for a whole one.
func (f *forwarder) writeBody(req *http.Request, chunked bool, up net.Conn) (res bodyResult) {
	rerr, werr := copyBody(f.ubw, req.Body, chunked, func() http.Header { return req.Trailer }, f.hc.br.Buffered)
	switch {
	case werr != nil:
		return bodyResult{err: fmt.Errorf("proxy: http write request body to %s: %w", f.upTarget, werr)}
	case rerr != nil:
		f.bodyFailed.Store(true) // before the reset, which the response reader will see
		resetConn(up)
		return bodyResult{err: rerr, client: true}
	}
	return bodyResult{}
}

// readResponse reads the final (or 101) response to req, relaying 1xx ones to an HTTP/1.1
// client. nothing tells whether the upstream sent no byte at all before failing.
func (f *forwarder) readResponse(req *http.Request) (resp *http.Response, nothing bool, err error) {
	for i := 0; ; i++ {
		f.ulr.start(maxResponseHeader, nil)
		resp, err = http.ReadResponse(f.ubr, req)
		hit, read := f.ulr.hit, f.ulr.read
		f.ulr.unlimit()
		if err != nil {
			if hit {
				err = errors.New("response header too large")
			}
			return nil, i == 0 && read == 0, fmt.Errorf("proxy: http read response from %s: %w", f.upTarget, err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, false, nil
		}
		if i == maxInformational {
			return nil, false, fmt.Errorf("proxy: http read response from %s: more than %d informational responses", f.upTarget, maxInformational)
		}
		if req.ProtoAtLeast(1, 1) {
			removeHopByHop(resp.Header)
			f.statusLine(resp)
			resp.Header.Write(f.cbw)
			f.cbw.WriteString("\r\n")
			if err := f.cbw.Flush(); err != nil {
				return nil, false, fmt.Errorf("proxy: http write response: %w", err)
			}
		}
	}
}

// statusLine writes resp's status line as HTTP/1.1 to the client.
func (f *forwarder) statusLine(resp *http.Response) {
	code := strconv.Itoa(resp.StatusCode)
	reason := strings.TrimPrefix(strings.TrimPrefix(resp.Status, code), " ")
	if reason == "" || strings.ContainsFunc(reason, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		reason = http.StatusText(resp.StatusCode)
	}
	f.cbw.WriteString("HTTP/1.1 ")
	f.cbw.WriteString(code)
	f.cbw.WriteByte(' ')
	f.cbw.WriteString(reason)
	f.cbw.WriteString("\r\n")
}

// writeResponse relays a final response to the client, framed for it: Content-Length when known,
// else chunked for HTTP/1.1 (close-delimited for HTTP/1.0, which closeDelimited reports). An
// upstream failure after the head has gone out resets the client: a cut response must not look
// whole.
func (f *forwarder) writeResponse(req *http.Request, resp *http.Response, clientClose bool) (closeDelimited bool, err error) {
	http11 := req.ProtoAtLeast(1, 1)
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified
	cl := resp.Header.Get("Content-Length")
	announce := resp.Trailer
	removeHopByHop(resp.Header)
	resp.Header.Del("Content-Length")
	chunked := false
	switch {
	case noBody:
	case resp.ContentLength >= 0:
	case http11:
		chunked = true
	default:
		closeDelimited, clientClose = true, true
	}

	f.statusLine(resp)
	switch {
	case noBody && cl != "" && resp.StatusCode != http.StatusNoContent:
		f.cbw.WriteString("Content-Length: " + cl + "\r\n")
	case noBody:
	case chunked:
		f.cbw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(announce) > 0 {
			f.cbw.WriteString("Trailer: " + strings.Join(slices.Sorted(maps.Keys(announce)), ", ") + "\r\n")
		}
	case !closeDelimited:
		f.cbw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n")
	}
	switch {
	case clientClose:
		f.cbw.WriteString("Connection: close\r\n")
	case !http11:
		f.cbw.WriteString("Connection: keep-alive\r\n")
	}
	resp.Header.Write(f.cbw)
	f.cbw.WriteString("\r\n")
	if noBody {
		if err := f.cbw.Flush(); err != nil {
			f.dropUpstream(true)
			return false, fmt.Errorf("proxy: http write response: %w", err)
		}
		return false, nil
	}

	rerr, werr := copyBody(f.cbw, resp.Body, chunked, func() http.Header { return resp.Trailer }, f.ubr.Buffered)
	switch {
	case werr != nil:
		f.dropUpstream(true)
		return false, fmt.Errorf("proxy: http write response: %w", werr)
	case rerr != nil:
		f.cbw.Flush()
		f.dropUpstream(true)
		resetConn(f.hc.c)
		return false, fmt.Errorf("proxy: http read response body from %s: %w", f.upTarget, rerr)
	}
	return closeDelimited, nil
}

// copyBody moves a message body from src to dst, re-chunked when chunked (then the last chunk and
// the trailer, read once the body is over, minus hop-by-hop fields), flushing whenever the other
// side has nothing more buffered (pending() == 0) so data never waits for more. It returns the
// read error (nil at the body's end) and the write error apart: the callers end differently.
func copyBody(dst *bufio.Writer, src io.Reader, chunked bool, trailer func() http.Header, pending func() int) (rerr, werr error) {
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	buf := *bufp
	var line [20]byte
	for zero := 0; ; {
		n, err := src.Read(buf)
		if n > 0 {
			zero = 0
			if chunked {
				_, werr = dst.Write(append(strconv.AppendInt(line[:0], int64(n), 16), '\r', '\n'))
			}
			if werr == nil {
				_, werr = dst.Write(buf[:n])
			}
			if werr == nil && chunked {
				_, werr = dst.WriteString("\r\n")
			}
			if werr == nil && pending() == 0 {
				werr = dst.Flush() // nothing more at hand: send what there is
			}
			if werr != nil {
				return nil, werr
			}
		} else if err == nil {
			if zero++; zero > 100 {
				err = io.ErrNoProgress
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
	}
	if chunked {
		dst.WriteString("0\r\n")
		t := trailer()
		removeHopByHop(t)
		t.Write(dst)
		dst.WriteString("\r\n")
	}
	return nil, dst.Flush()
}

// switchProtocols relays a 101 to a request that asked to upgrade, then both streams as they are.
func (f *forwarder) switchProtocols(req *http.Request, resp *http.Response, upgrade string, werrc chan bodyResult, rl *RequestLog) error {
	if werrc != nil {
		up := f.up
		f.bodyDeadline(up, time.Now().Add(bodyGrace))
		w := <-werrc
		f.bodyDeadline(up, time.Time{})
		if w.err != nil {
			f.dropUpstream(true)
			if w.client {
				return f.clientBodyFailed(w.err, rl)
			}
			rl.Status = http.StatusBadGateway
			writeHTTPError(f.hc.c, rl.Status, "the origin switched protocols before it had the request")
			f.closeClient()
			return w.err
		}
	}
	if upgrade == "" {
		f.dropUpstream(true)
		rl.Status = http.StatusBadGateway
		writeHTTPError(f.hc.c, rl.Status, "the origin switched protocols unasked")
		f.closeClient()
		return fmt.Errorf("proxy: http %s: 101 to a request that did not ask to upgrade", f.upTarget)
	}
	to := strings.Join(resp.Header.Values("Upgrade"), ", ")
	removeHopByHop(resp.Header)
	resp.Header.Del("Content-Length")
	f.statusLine(resp)
	f.cbw.WriteString("Connection: Upgrade\r\n")
	if to != "" {
		f.cbw.WriteString("Upgrade: " + to + "\r\n")
	}
	resp.Header.Write(f.cbw)
	f.cbw.WriteString("\r\n")
	rl.Status = resp.StatusCode
	if err := f.cbw.Flush(); err != nil {
		f.dropUpstream(true)
		return fmt.Errorf("proxy: http write response: %w", err)
	}
	return f.pipe()
}

// connect serves a CONNECT that came after other requests: dial, 200, then a two-way relay.
func (f *forwarder) connect(t Target, rl *RequestLog) error {
	f.dropUpstream(false)
	c, err := dialTarget(f.ctx, f.dial, t)
	if err != nil {
		rl.Status = statusOf(err)
		writeDialError(f.hc.c, err)
		f.closeClient()
		return err
	}
	if err := f.setUpstream(c, t); err != nil {
		return err
	}
	if _, err := io.WriteString(f.hc.c, connectEstablished); err != nil {
		f.dropUpstream(true)
		return fmt.Errorf("proxy: http write CONNECT reply: %w", err)
	}
	rl.Status = http.StatusOK
	return f.pipe()
}

// pipe relays both ways between the client and the upstream until both have ended (bytes either
// side had buffered go first). A side that ends (EOF) has the other's write half closed; a failure
// resets both.
func (f *forwarder) pipe() error {
	up := f.up
	errc := make(chan error, 1)
	go func() { errc <- relayHalf(&f.uw, up, f.hc.br, f.hc.c, up) }()
	err := relayHalf(&f.cw, f.hc.c, f.ubr, f.hc.c, up)
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// relayHalf copies src to dst (the writer over dstConn) until EOF, then closes dstConn's write
// half. On failure it resets both conns, which ends the other direction too.
func relayHalf(dst io.Writer, dstConn net.Conn, src io.Reader, client, up net.Conn) error {
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	for {
		n, rerr := src.Read(*bufp)
		if n > 0 {
			if _, err := dst.Write((*bufp)[:n]); err != nil {
				resetConn(client)
				resetConn(up)
				return fmt.Errorf("proxy: relay write: %w", err)
			}
		}
		if rerr == io.EOF {
			halfClose(dstConn)
			return nil
		}
		if rerr != nil {
			resetConn(client)
			resetConn(up)
			return fmt.Errorf("proxy: relay read: %w", rerr)
		}
	}
}

// headerHasToken reports whether a comma-separated header lists token (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// isConnReset reports errors of a connection the peer closed or reset.
func isConnReset(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
