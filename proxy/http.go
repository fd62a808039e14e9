package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// httpBufSize is the size of the bufio.Readers requests and responses are parsed from.
const httpBufSize = 4 << 10

// connectEstablished is the reply to a successful CONNECT.
const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// authRealm is the realm of the 407 challenge.
const authRealm = "warren"

// hopByHop are the headers that apply to one connection only and are never forwarded as they
// came (RFC 9110 §7.6.1); the framing headers are rewritten by the proxy itself.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// limitReader stops reading after remain bytes and records why reading stopped; while rec is set
// it also appends what it reads to *rec (the raw bytes of a request or response head).
type limitReader struct {
	r      io.Reader
	remain int64
	read   int64 // bytes read since the last start
	hit    bool  // the limit was reached
	err    error // the first error of r since the last start
	rec    *[]byte
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
	if l.rec != nil {
		*l.rec = append(*l.rec, p[:n]...)
	}
	if err != nil && l.err == nil {
		l.err = err
	}
	return n, err
}

// start limits reading to limit bytes (a head), recording into rec when it is not nil.
func (l *limitReader) start(limit int64, rec *[]byte) {
	l.remain, l.read, l.hit, l.err, l.rec = limit, 0, false, nil, rec
}

// unlimit ends a head: reading is unbounded and unrecorded again (a body).
func (l *limitReader) unlimit() {
	l.remain, l.rec = math.MaxInt64, nil
}

// httpConn is the client side of an HTTP proxy connection: requests are parsed from br, which
// reads the client through lr.
type httpConn struct {
	c    net.Conn
	lr   *limitReader
	br   *bufio.Reader
	head []byte // the raw bytes of the last request head read
}

func newHTTPConn(c net.Conn) *httpConn {
	lr := &limitReader{r: c, remain: math.MaxInt64}
	return &httpConn{c: c, lr: lr, br: bufio.NewReaderSize(lr, httpBufSize)}
}

// readRequest parses the next request head with net/http, keeping its raw bytes in h.head for
// the checks net/http does not make. A head longer than maxHeader is ErrHeaderTooLarge.
func (h *httpConn) readRequest(maxHeader int) (*http.Request, error) {
	h.head = append(h.head[:0], buffered(h.br)...)
	h.lr.start(int64(max(maxHeader-len(h.head), 0)+httpBufSize), &h.head)
	req, err := http.ReadRequest(h.br)
	hit := h.lr.hit
	h.lr.unlimit()
	// What br still holds was read past the head: the head is what came before it.
	h.head = h.head[:len(h.head)-h.br.Buffered()]
	if hit || (err == nil && len(h.head) > maxHeader) {
		return nil, fmt.Errorf("proxy: http read request: %w", ErrHeaderTooLarge)
	}
	if err != nil {
		return nil, err
	}
	return req, nil
}

// releaseHead drops a large head buffer once the head was checked: a keep-alive connection keeps
// at most a small one between requests, not the largest head it ever saw.
func (h *httpConn) releaseHead() {
	if cap(h.head) > 4<<10 {
		h.head = nil
	}
}

// readError turns a failure to read a request head into the status to answer (0: none) and the
// error to report. expired tells whether a timeout was the handshake budget running out.
func (h *httpConn) readError(err error, expired bool) (int, error) {
	lr := h.lr
	switch {
	case errors.Is(err, ErrHeaderTooLarge):
		return http.StatusRequestHeaderFieldsTooLarge, err
	case lr.err != nil && lr.err != io.EOF:
		status := 0
		if isTimeout(lr.err) && (lr.read > 0 || len(h.head) > 0) {
			status = http.StatusRequestTimeout
		} // else the connection failed, or was idle: nobody to answer
		if expired {
			return status, fmt.Errorf("proxy: http read request: %w: %w", ErrHandshakeTimeout, lr.err)
		}
		return status, fmt.Errorf("proxy: http read request: %w", lr.err)
	case errors.Is(err, io.EOF) && lr.read == 0 && len(h.head) == 0:
		return 0, fmt.Errorf("proxy: http read request: %w", err)
	}
	return http.StatusBadRequest, fmt.Errorf("proxy: http read request: %w: %w", ErrBadRequest, err)
}

// httpHandshake reads one proxy request from client and serves it: CONNECT, or an absolute
// http:// URI (a Forward session: dialled, not yet sent).
func httpHandshake(ctx context.Context, g *guard, client net.Conn, dial DialFunc, opts Options) (*Session, error) {
	h := newHTTPConn(client)
	deadline := time.Now().Add(opts.handshakeTimeout())
	g.limitRead(client, deadline)
	req, err := h.readRequest(opts.maxHeaderBytes())
	g.limitRead(client, time.Time{})
	if err != nil {
		status, err := h.readError(err, handshakeExpired(ctx, h.lr.err, deadline))
		if status != 0 {
			if status == http.StatusRequestTimeout && !errors.Is(err, ErrHandshakeTimeout) {
				g.replyWindow(client) // ctx ran out: the reply gets its own moment
			}
			writeHTTPError(client, status, statusMessage(status))
		}
		return nil, err
	}
	t, ref, err := checkRequest(req, h.head, opts)
	h.releaseHead()
	if err != nil {
		ref.write(client)
		return nil, err
	}
	up, err := dialTarget(ctx, dial, t)
	if err != nil {
		g.replyWindow(client)
		writeDialError(client, err)
		return nil, err
	}
	if req.Method == http.MethodConnect {
		if _, err := io.WriteString(client, connectEstablished); err != nil {
			up.Close()
			return nil, fmt.Errorf("proxy: http write CONNECT reply: %w", err)
		}
		return &Session{Target: t, Upstream: up, Client: clientReader(buffered(h.br), client), Method: req.Method}, nil
	}
	return &Session{Target: t, Upstream: up, Forward: true, Method: req.Method,
		fwd: &forwardState{hc: h, req: req, opts: opts}}, nil
}

// refusal is the proxy's own answer to a request it will not forward.
type refusal struct {
	status int
	msg    string
}

func refuse(status int, msg string) refusal { return refusal{status, msg} }

// write sends the refusal with Connection: close (407s with the Basic challenge).
func (r refusal) write(w io.Writer) {
	if r.status == http.StatusProxyAuthRequired {
		writeHTTPErrorHeader(w, r.status, r.msg, "Proxy-Authenticate: Basic realm=\""+authRealm+"\"\r\n")
		return
	}
	writeHTTPError(w, r.status, r.msg)
}

// checkRequest judges a parsed request head and its raw bytes: the HTTP version, framing that
// net/http would let through, credentials, expectations and the target. It returns the target,
// or how to refuse the request and why.
func checkRequest(req *http.Request, head []byte, opts Options) (Target, refusal, error) {
	if !(req.ProtoMajor == 1 && (req.ProtoMinor == 0 || req.ProtoMinor == 1)) {
		return Target{}, refuse(http.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"),
			fmt.Errorf("%w: HTTP version %q", ErrUnsupported, req.Proto)
	}
	if err := checkHead(head, req.ProtoAtLeast(1, 1)); err != nil {
		return Target{}, refuse(http.StatusBadRequest, "ambiguous or malformed request"), err
	}
	if opts.Auth != nil {
		if err := checkAuth(req.Header, opts.Auth); err != nil {
			return Target{}, refuse(http.StatusProxyAuthRequired, "proxy authentication required"), err
		}
	}
	if req.Method == http.MethodConnect {
		return connectTarget(req)
	}
	if expect := req.Header.Get("Expect"); expect != "" && !strings.EqualFold(expect, "100-continue") {
		return Target{}, refuse(http.StatusExpectationFailed, "unsupported expectation"), fmt.Errorf("%w: Expect: %q", ErrUnsupported, expect)
	}
	return forwardTarget(req)
}

// checkHead refuses what net/http accepts or quietly repairs but RFC 9112 makes ambiguous: obsolete
// line folding, whitespace between a field name and its colon (and any other byte that is not a
// token in a name), control characters in a value, Content-Length together with
// Transfer-Encoding (net/http drops the Content-Length), differing Content-Lengths, a
// Transfer-Encoding whose last coding is not chunked, and Transfer-Encoding in HTTP/1.0 (which
// net/http ignores).
func checkHead(head []byte, http11 bool) error {
	// Skip the request line: net/http has parsed it.
	i := bytes.IndexByte(head, '\n')
	if i < 0 {
		return fmt.Errorf("%w: no request line", ErrBadRequest)
	}
	rest := head[i+1:]
	var cl, te int
	var clValue, teLast []byte
	for len(rest) > 0 {
		line := rest
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			line, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the end of the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("%w: obsolete line folding", ErrBadRequest)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("%w: header line without a field name", ErrBadRequest)
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if c == ' ' || c == '\t' {
				return fmt.Errorf("%w: whitespace before the colon of %q", ErrBadRequest, bytes.TrimRight(name, " \t"))
			}
			if !isTokenByte(c) {
				return fmt.Errorf("%w: invalid field name %q", ErrBadRequest, name)
			}
		}
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return fmt.Errorf("%w: control character in field %q", ErrBadRequest, name)
			}
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if cl > 0 && !bytes.Equal(value, clValue) {
				return fmt.Errorf("%w: differing Content-Length values", ErrBadRequest)
			}
			cl++
			clValue = value
		case asciiEqualFold(name, "Transfer-Encoding"):
			te++
			codings := bytes.Split(value, []byte(","))
			teLast = bytes.Trim(codings[len(codings)-1], " \t")
		}
	}
	switch {
	case te > 0 && cl > 0:
		return fmt.Errorf("%w: both Content-Length and Transfer-Encoding", ErrBadRequest)
	case te > 0 && !http11:
		return fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 request", ErrBadRequest)
	case te > 0 && !asciiEqualFold(teLast, "chunked"):
		return fmt.Errorf("%w: Transfer-Encoding does not end in chunked", ErrBadRequest)
	}
	return nil
}

// isTokenByte reports whether c may appear in a field name (RFC 9110 tchar).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// checkAuth checks a request's Proxy-Authorization: Basic credentials. A failure wraps ErrAuth
// and names the user (quoted) at most.
func checkAuth(h http.Header, auth Authenticator) error {
	vals := h.Values("Proxy-Authorization")
	if len(vals) == 0 {
		return fmt.Errorf("%w: no Proxy-Authorization", ErrAuth)
	}
	if len(vals) > 1 {
		return fmt.Errorf("%w: more than one Proxy-Authorization", ErrAuth)
	}
	scheme, cred, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return fmt.Errorf("%w: Proxy-Authorization scheme is not Basic", ErrAuth)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return fmt.Errorf("%w: malformed Basic credentials", ErrAuth)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	clear(raw)
	if !ok {
		return fmt.Errorf("%w: malformed Basic credentials", ErrAuth)
	}
	if !auth.Authenticate(user, pass) {
		return fmt.Errorf("%w: http user %s", ErrAuth, quoteUser(user))
	}
	return nil
}

// connectTarget validates a CONNECT request and returns its target.
func connectTarget(req *http.Request) (Target, refusal, error) {
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return Target{}, refuse(http.StatusBadRequest, "CONNECT with a body"), fmt.Errorf("%w: CONNECT with a body", ErrBadRequest)
	}
	h, p, err := net.SplitHostPort(req.URL.Host)
	if err != nil {
		return Target{}, refuse(http.StatusBadRequest, "CONNECT needs host:port"),
			fmt.Errorf("%w: CONNECT target %q: %w", ErrBadRequest, req.URL.Host, err)
	}
	t, err := httpTarget(h, p)
	if err != nil {
		return Target{}, refuse(http.StatusBadRequest, "invalid CONNECT target"), err
	}
	return t, refusal{}, nil
}

// forwardTarget validates an absolute-URI request and returns its origin.
func forwardTarget(req *http.Request) (Target, refusal, error) {
	switch {
	case req.URL.Scheme == "":
		return Target{}, refuse(http.StatusBadRequest, "this is a proxy: use an absolute URI or CONNECT"),
			fmt.Errorf("%w: %s %q is not a proxy request", ErrBadRequest, req.Method, req.RequestURI)
	case req.URL.Scheme != "http":
		return Target{}, refuse(http.StatusBadRequest, "only http:// URIs are proxied; use CONNECT for https"),
			fmt.Errorf("%w: %s:// URI", ErrUnsupported, req.URL.Scheme)
	case req.URL.Opaque != "" || req.URL.Host == "":
		return Target{}, refuse(http.StatusBadRequest, "URI has no host"), fmt.Errorf("%w: URI %q has no host", ErrBadRequest, req.RequestURI)
	}
	p := req.URL.Port()
	if p == "" {
		p = "80"
	}
	t, err := httpTarget(req.URL.Hostname(), p)
	if err != nil {
		return Target{}, refuse(http.StatusBadRequest, "invalid host"), err
	}
	return t, refusal{}, nil
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// buffered returns the bytes br holds but nobody read yet; valid until br is used again.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// statusMessage is the short text of the proxy's answer to a head it could not read.
func statusMessage(status int) string {
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return "request header too large"
	case http.StatusRequestTimeout:
		return "request incomplete"
	}
	return "malformed request"
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
	writeHTTPErrorHeader(w, status, msg, "")
}

// writeHTTPErrorHeader is writeHTTPError with extra header lines (each ending in CRLF).
func writeHTTPErrorHeader(w io.Writer, status int, msg, extra string) {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	body := strconv.Itoa(status) + " " + text + ": " + msg + "\n"
	io.WriteString(w, "HTTP/1.1 "+strconv.Itoa(status)+" "+text+"\r\n"+extra+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\n"+
		"Connection: close\r\n\r\n"+body)
}
