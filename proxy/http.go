package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/messages"
)

// httpBufSize is the size of the bufio.Reader the request is parsed from.
const httpBufSize = 4 << 10

// connectEstablished is the reply to a successful CONNECT.
const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// hopByHop are the headers that apply to one connection only and are not forwarded.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// limitReader stops reading after remain bytes and records why reading stopped.
type limitReader struct {
	r      io.Reader
	remain int64
	read   int64 // bytes read while limited
	hit    bool  // the limit was reached
	err    error // the first error of r
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.remain <= 0 {
		l.hit = true
		return 0, io.EOF
	}
	if int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.r.Read(p)
	l.remain -= int64(n)
	l.read += int64(n)
	if err != nil && l.err == nil {
		l.err = err
	}
	return n, err
}

// httpHandshake reads one proxy request from client and serves it: CONNECT or an
// absolute http:// URI.
func httpHandshake(ctx context.Context, g *guard, client net.Conn, dial DialFunc) (*Session, error) {
	lr := &limitReader{r: client, remain: MaxHeaderBytes + httpBufSize}
	br := bufio.NewReaderSize(lr, httpBufSize)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, httpReadError(g, client, lr, err)
	}
	lr.remain = math.MaxInt64
	if req.Method == http.MethodConnect {
		return httpConnect(ctx, g, client, br, req, dial)
	}
	return httpForward(ctx, g, client, br, req, dial)
}

// httpReadError answers a request that could not be read and returns the error to report.
func httpReadError(g *guard, client net.Conn, lr *limitReader, err error) error {
	switch {
	case lr.hit:
		writeHTTPError(client, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		return fmt.Errorf("proxy: http read request: %w", ErrHeaderTooLarge)
	case lr.err != nil && lr.err != io.EOF:
		if isTimeout(lr.err) && lr.read > 0 {
			g.replyWindow(client)
			writeHTTPError(client, http.StatusRequestTimeout, "request incomplete")
		} // else the connection failed, or was idle: nobody to answer
		return fmt.Errorf("proxy: http read request: %w", lr.err)
	case errors.Is(err, io.EOF) && lr.read == 0:
		return fmt.Errorf("proxy: http read request: %w", err)
	}
	writeHTTPError(client, http.StatusBadRequest, "malformed request")
	return fmt.Errorf("proxy: http read request: %w: %w", ErrBadRequest, err)
}

// httpConnect serves a CONNECT request.
func httpConnect(ctx context.Context, g *guard, client net.Conn, br *bufio.Reader, req *http.Request, dial DialFunc) (*Session, error) {
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		writeHTTPError(client, http.StatusBadRequest, "CONNECT with a body")
		return nil, fmt.Errorf("%w: CONNECT with a body", ErrBadRequest)
	}
	h, p, err := net.SplitHostPort(req.URL.Host)
	if err != nil {
		writeHTTPError(client, http.StatusBadRequest, "CONNECT needs host:port")
		return nil, fmt.Errorf("%w: CONNECT target %q: %w", ErrBadRequest, req.URL.Host, err)
	}
	t, err := httpTarget(h, p)
	if err != nil {
		writeHTTPError(client, http.StatusBadRequest, "invalid CONNECT target")
		return nil, err
	}
	up, err := dialTarget(ctx, dial, t)
	if err != nil {
		g.replyWindow(client)
		writeDialError(client, err)
		return nil, err
	}
	if _, err := io.WriteString(client, connectEstablished); err != nil {
		up.Close()
		return nil, fmt.Errorf("proxy: http write CONNECT reply: %w", err)
	}
	return &Session{Target: t, Upstream: up, Client: clientReader(buffered(br), client), Method: req.Method}, nil
}

// httpForward serves an absolute-URI request: it dials the origin and sends it the request in
// origin form with "Connection: close".
func httpForward(ctx context.Context, g *guard, client net.Conn, br *bufio.Reader, req *http.Request, dial DialFunc) (*Session, error) {
	switch {
	case req.URL.Scheme == "":
		writeHTTPError(client, http.StatusBadRequest, "this is a proxy: use an absolute URI or CONNECT")
		return nil, fmt.Errorf("%w: %s %q is not a proxy request", ErrBadRequest, req.Method, req.RequestURI)
	case req.URL.Scheme != "http":
		writeHTTPError(client, http.StatusBadRequest, "only http:// URIs are proxied; use CONNECT for https")
		return nil, fmt.Errorf("%w: %s:// URI", ErrUnsupported, req.URL.Scheme)
	case req.URL.Opaque != "" || req.URL.Host == "":
		writeHTTPError(client, http.StatusBadRequest, "URI has no host")
		return nil, fmt.Errorf("%w: URI %q has no host", ErrBadRequest, req.RequestURI)
	}
	p := req.URL.Port()
	if p == "" {
		p = "80"
	}
	t, err := httpTarget(req.URL.Hostname(), p)
	if err != nil {
		writeHTTPError(client, http.StatusBadRequest, "invalid host")
		return nil, err
	}
	expect := req.Header.Get("Expect")
	continue100 := strings.EqualFold(expect, "100-continue")
	if expect != "" && !continue100 {
		writeHTTPError(client, http.StatusExpectationFailed, "unsupported expectation")
		return nil, fmt.Errorf("%w: Expect: %q", ErrUnsupported, expect)
	}

	up, err := dialTarget(ctx, dial, t)
	if err != nil {
		g.replyWindow(client)
		writeDialError(client, err)
		return nil, err
	}
	g.add(up)

	removeHopByHop(req.Header)
	req.Header.Del("Expect")
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // keep Request.Write from adding its own
	}
	req.Close = true
	req.RequestURI = ""
	var body *bodyReader
	if req.Body != nil && req.Body != http.NoBody {
		body = &bodyReader{rc: req.Body}
		req.Body = body
	}
	if continue100 && body != nil && req.ProtoAtLeast(1, 1) {
		// The origin is reachable: ask for the body here, since the origin's own 100 would
		// only reach the client after the handshake.
		if _, err := io.WriteString(client, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			up.Close()
			return nil, fmt.Errorf("proxy: http write 100 Continue: %w", err)
		}
	}
	uw := &errWriter{w: up}
	bw := bufio.NewWriterSize(uw, 32<<10)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		up.Close()
		if uw.err != nil {
			err = uw.err // net/http hides it behind an error without Unwrap
		}
		if body != nil && body.err != nil && body.err != io.EOF {
			g.replyWindow(client)
			if isTimeout(body.err) {
				writeHTTPError(client, http.StatusRequestTimeout, "request body incomplete")
				return nil, fmt.Errorf("proxy: http read request body: %w", body.err)
			}
			writeHTTPError(client, http.StatusBadRequest, "malformed request body")
			return nil, fmt.Errorf("proxy: http read request body: %w: %w", ErrBadRequest, body.err)
		}
		g.replyWindow(client)
		writeHTTPError(client, statusOf(err), "writing the request upstream failed")
		return nil, fmt.Errorf("proxy: http write request to %s: %w", t, err)
	}
	return &Session{
		Target:             t,
		Upstream:           up,
		Client:             clientReader(buffered(br), client),
		CloseAfterResponse: true,
		Method:             req.Method,
	}, nil
}

// httpTarget validates a host and decimal port from a request.
func httpTarget(host, port string) (Target, error) {
	h, err := parseHost(host)
	if err != nil {
		return Target{}, err
	}
	p, err := parsePort(port)
	if err != nil {
		return Target{}, err
	}
	return Target{Host: h, Port: p}, nil
}

// removeHopByHop deletes the hop-by-hop headers and those named by Connection.
func removeHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// bodyReader records the first error reading the client's request body, to tell a bad
// client from a failed upstream.
type bodyReader struct {
	rc  io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errWriter records the first error writing upstream.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// buffered returns the bytes br holds but nobody read yet; valid until br is used again.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// writeDialError answers a failed dial with the matching status.
func writeDialError(w io.Writer, err error) {
	msg := messages.ReplyCodeNames[failureCode(err)]
	if msg == "" {
		msg = "upstream failed"
	}
	writeHTTPError(w, statusOf(err), msg)
}

// writeHTTPError writes a complete error response with a short text body and Connection: close.
// Errors are ignored: the client is being turned away either way.
func writeHTTPError(w io.Writer, status int, msg string) {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	body := strconv.Itoa(status) + " " + text + ": " + msg + "\n"
	io.WriteString(w, "HTTP/1.1 "+strconv.Itoa(status)+" "+text+"\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\n"+
		"Connection: close\r\n\r\n"+body)
}
