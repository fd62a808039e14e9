package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/pool"
)

// Error is the body of every error reply, {"error": {"code": "...", "message": "..."}}, and what
// Client methods return for one (errors.As). Status is the HTTP status it came with.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "admin: " + e.Code + ": " + e.Message }

// Error codes and their HTTP statuses.
const (
	CodeBadRequest       = "bad_request"        // 400: a malformed body, an unknown or invalid field (named), a bad parameter
	CodeUnauthorized     = "unauthorized"       // 401: no or a wrong token
	CodeForbidden        = "forbidden"          // 403: a Host header that is not loopback on a listener without a token
	CodeNotFound         = "not_found"          // 404: no such path, tunnel, pool or exit
	CodeMethodNotAllowed = "method_not_allowed" // 405: the path exists, the method does not (Allow lists them)
	CodeConflict         = "conflict"           // 409: busy (another transition is running), a name in use, a slot not up
	CodeTooLarge         = "too_large"          // 413: a body over 64 KiB
	CodeUnsupportedMedia = "unsupported_media"  // 415: a POST or PATCH without Content-Type: application/json
	CodeInternal         = "internal"           // 500: a bug (logged)
	CodeNotImplemented   = "not_implemented"    // 501: no reload function
	CodeFailed           = "failed"             // 502: the transition failed at the exit: unreachable, refused, no handshake
	CodeUnavailable      = "unavailable"        // 503: the engine (or pool) is closed or not started, NATS or signaling is down
	CodeTimeout          = "timeout"            // 504: the call's timeout passed first; the transition may still go on
)

var statusOf = map[string]int{
	CodeBadRequest: http.StatusBadRequest, CodeUnauthorized: http.StatusUnauthorized, CodeForbidden: http.StatusForbidden,
	CodeNotFound: http.StatusNotFound, CodeMethodNotAllowed: http.StatusMethodNotAllowed, CodeConflict: http.StatusConflict,
	CodeTooLarge: http.StatusRequestEntityTooLarge, CodeUnsupportedMedia: http.StatusUnsupportedMediaType,
	CodeInternal: http.StatusInternalServerError, CodeNotImplemented: http.StatusNotImplemented,
	CodeFailed: http.StatusBadGateway, CodeUnavailable: http.StatusServiceUnavailable, CodeTimeout: http.StatusGatewayTimeout,
}

// codeForStatus names a status that came without an error body (from a proxy in between).
func codeForStatus(status int) string {
	for c, s := range statusOf {
		if s == status {
			return c
		}
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeBadRequest
}

func newError(code, msg string) *Error {
	return &Error{Status: statusOf[code], Code: code, Message: msg}
}

// errorReply is the JSON body of an error.
type errorReply struct {
	Error *Error `json:"error"`
}

// Errors of the admin API itself.
var (
	errNoPool = newError(CodeNotFound, "this engine runs no pool")
	errNoExit = newError(CodeNotFound, "this engine serves no exit")
)

// classify turns an engine, pool or request error into an *Error.
func classify(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var fe *engine.FieldError
	msg := err.Error()
	switch {
	case errors.As(err, &fe), errors.Is(err, engine.ErrInvalidConfig), errors.Is(err, pool.ErrRange):
		return newError(CodeBadRequest, msg)
	case errors.Is(err, engine.ErrTunnelNotFound), errors.Is(err, engine.ErrTunnelClosed), errors.Is(err, pool.ErrNoSlot):
		return newError(CodeNotFound, msg)
	case errors.Is(err, engine.ErrUnknownExit):
		return newError(CodeNotFound, msg)
	case errors.Is(err, engine.ErrNoExit):
		return newError(CodeNotFound, errNoExit.Message)
	case errors.Is(err, engine.ErrTunnelExists), errors.Is(err, engine.ErrBusy), errors.Is(err, engine.ErrNotUp),
		errors.Is(err, pool.ErrNotUp):
		return newError(CodeConflict, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return newError(CodeTimeout, msg)
	case errors.Is(err, context.Canceled):
		return newError(CodeUnavailable, "the admin server is closing: "+msg)
	case errors.Is(err, engine.ErrEngineClosed), errors.Is(err, engine.ErrNotStarted), errors.Is(err, pool.ErrClosed),
		errors.Is(err, engine.ErrNATSUnavailable), errors.Is(err, engine.ErrNoSignaling), errors.Is(err, engine.ErrNoDirectory),
		errors.Is(err, ErrClosed), errors.Is(err, engine.ErrUnresponsive):
		return newError(CodeUnavailable, msg)
	case errors.Is(err, engine.ErrExitUnreachable), errors.Is(err, engine.ErrSessionRefused),
		errors.Is(err, engine.ErrHandshakeTimeout), errors.Is(err, engine.ErrExitGone), errors.Is(err, engine.ErrDeviceFailed),
		errors.Is(err, engine.ErrNATSAuth), errors.Is(err, engine.ErrEndpointUnresolved),
		errors.Is(err, engine.ErrCheckFailed):
		return newError(CodeFailed, msg)
	}
	return newError(CodeInternal, msg)
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError writes err as an error reply.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	if e.Status == 0 {
		e.Status = http.StatusInternalServerError
	}
	if e.Status >= 500 && e.Code != CodeNotImplemented {
		s.logger.Warn("admin request failed", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", e.Message)
	}
	writeJSON(w, e.Status, errorReply{Error: e})
}

// badRequest names what is wrong with a request.
func badRequest(format string, args ...any) *Error {
	return newError(CodeBadRequest, fmt.Sprintf(format, args...))
}
