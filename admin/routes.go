package admin

// Routing, authentication, request bodies and timeouts.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxBody caps request bodies.
const maxBody = 64 << 10

// Timeouts: readTimeout bounds every read (GET) and /metrics' snapshot; the mutating calls have
// their own default, which ?timeout= changes (at most maxTimeout).
const (
	readTimeout    = 10 * time.Second
	openTimeout    = time.Minute
	switchTimeout  = time.Minute
	closeTimeout   = 30 * time.Second // after the drain
	poolTimeout    = 5 * time.Minute
	drainTimeout   = 10 * time.Minute
	reloadTimeout  = 5 * time.Minute
	maxTimeout     = time.Hour
	healthzTimeout = 2 * time.Second
)

type route struct {
	method, path string
	handle       func(http.ResponseWriter, *http.Request) error
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	table := []route{
		{"GET", "/{$}", s.page},
		{"GET", "/healthz", s.healthz},
		{"GET", "/readyz", s.readyz},
		{"GET", "/metrics", s.metrics.serve},
		{"GET", "/v1/status", s.status},
		{"GET", "/v1/tunnels", s.listTunnels},
		{"POST", "/v1/tunnels", s.createTunnel},
		{"GET", "/v1/tunnels/{name}", s.getTunnel},
		{"DELETE", "/v1/tunnels/{name}", s.deleteTunnel},
		{"POST", "/v1/tunnels/{name}/switch", s.switchTunnel},
		{"POST", "/v1/tunnels/{name}/reconnect", s.reconnectTunnel},
		{"GET", "/v1/connections", s.connections},
		{"GET", "/v1/exits", s.exits},
		{"GET", "/v1/pool", s.getPool},
		{"PATCH", "/v1/pool", s.resizePool},
		{"POST", "/v1/pool/rotate", s.rotatePool},
		{"GET", "/v1/exit/sessions", s.exitSessions},
		{"POST", "/v1/exit/drain", s.drainExit},
		{"POST", "/v1/reload", s.reload},
	}
	allowed := map[string][]string{}
	for _, rt := range table {
		mux.Handle(rt.method+" "+rt.path, s.wrap(rt.handle))
		if !slices.Contains(allowed[rt.path], rt.method) {
			allowed[rt.path] = append(allowed[rt.path], rt.method)
		}
	}
	for path, methods := range allowed {
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		allow := strings.Join(methods, ", ")
		mux.Handle(path, s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", allow)
			return newError(CodeMethodNotAllowed, fmt.Sprintf("%s %s: allowed: %s", r.Method, cut(r.URL.Path), allow))
		}))
	}
	mux.Handle("/", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return newError(CodeNotFound, "no such path: "+cut(r.URL.Path))
	}))
	return s.guard(mux)
}

// guard tracks every request (Close waits for them), recovers panics, and checks the Host header
// and the credentials before anything else runs.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.inflight.enter() {
			s.writeError(w, r, newError(CodeUnavailable, "the admin server is closing"))
			return
		}
		defer s.inflight.leave()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.logger.Error("admin handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				s.writeError(w, r, newError(CodeInternal, "the handler failed (logged)"))
			}
		}()
		if !s.hostAllowed(r) {
			s.writeError(w, r, newError(CodeForbidden, "Host "+cut(r.Host)+" is not loopback: an admin listener without a token answers only to loopback names"))
			return
		}
		if !s.authorized(r) {
			s.logger.Debug("admin request refused: no or a wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			if r.URL.Path == "/" {
				w.Header().Set("WWW-Authenticate", `Basic realm="warren admin", charset="UTF-8"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="warren admin"`)
			}
			s.writeError(w, r, newError(CodeUnauthorized, "missing or wrong token (Authorization: Bearer TOKEN)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// wrap turns a handler that returns an error into one that writes it. Calls that change
// something are logged at info once answered (method, path, status, who, how long).
func (s *Server) wrap(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			sw := &statusWriter{ResponseWriter: w}
			w = sw
			start := time.Now()
			defer func() {
				s.logger.Info("admin call", "method", r.Method, "path", r.URL.Path, "status", sw.status,
					"remote", r.RemoteAddr, "took", time.Since(start).Round(time.Millisecond))
			}()
		}
		if r.Method == http.MethodPost || r.Method == http.MethodPatch {
			// A JSON content type makes a browser ask first (CORS preflight, never answered here),
			// so that no web page can post a form to the API.
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				s.writeError(w, r, newError(CodeUnsupportedMedia, "send Content-Type: application/json (with an empty body or {} where none is needed)"))
				return
			}
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// tracker counts the requests being handled; Close waits until none is left and lets no new one in.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed once closed with no request left
}

func newTracker() *tracker { return &tracker{idle: make(chan struct{})} }

func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.closed && t.n == 0 {
		close(t.idle)
	}
}

// closeAndWait lets no new request in and waits for those in progress.
func (t *tracker) closeAndWait() {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		if t.n == 0 {
			close(t.idle)
		}
	}
	t.mu.Unlock()
	<-t.idle
}

// decode reads a JSON body into v: at most maxBody bytes, one value, no unknown fields. An empty
// body leaves v as it is when optional.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return badRequest("body: empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return badRequest("body: more than one JSON value")
	}
	return nil
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, newError(CodeTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
	}
	if err != nil {
		return nil, badRequest("body: %v", err)
	}
	return data, nil
}

// jsonError names the field a JSON decoding error is about.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return badRequest("body: malformed JSON at byte %d: %v", se.Offset, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return badRequest("body: want a JSON %s, not %s", te.Type.Kind(), te.Value)
		}
		return badRequest("body.%s: want %s, not %s", field, te.Type.String(), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("body.%s: unknown field", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("body: truncated JSON")
	}
	return badRequest("body: %v", err)
}

// timeout is the call's ?timeout= (a Go duration, at most maxTimeout), or def.
func timeout(r *http.Request, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > maxTimeout {
		return 0, badRequest("timeout: %q: want a duration from 1ms to %s", cut(v), maxTimeout)
	}
	return d, nil
}

// within runs a mutating call with its timeout.
func within(r *http.Request, def time.Duration) (context.Context, context.CancelFunc, error) {
	d, err := timeout(r, def)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// reading bounds a read.
func reading(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), readTimeout)
}
