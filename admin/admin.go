// Package admin is Warren's operator surface: a JSON admin API, Prometheus metrics, health
// endpoints and a status page, served over HTTP on the admin listener (docs/operations.md).
//
// A Server is made by New (which checks the config and binds nothing), started by Start (which binds
// the listener and starts the one goroutine that serves it) and stopped by Close (which stops
// serving and waits for every handler to return). The Server owns the listener and that
// goroutine; Close releases both. Client is the Go client the `engine` CLI uses: one method per
// endpoint, returning the JSON types the server writes.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/pool"
)

// DefaultListen is where `engine run` serves the admin API unless admin.listen says otherwise.
const DefaultListen = "127.0.0.1:9090"

// minTokenLen is the shortest bearer token New accepts.
const minTokenLen = 16

// Config configures the admin listener (the `admin:` section of the config file).
type Config struct {
	// Listen is the TCP address of the admin listener ("127.0.0.1:9090"); "" turns it off.
	Listen string `yaml:"listen"`
	// Token is the bearer token every request must carry (Authorization: Bearer TOKEN). Required
	// when Listen is not a loopback address; at least 16 characters, printable ASCII.
	Token string `yaml:"token"`
	// TokenFile is a file holding the token (surrounding white space is trimmed); at most one of
	// Token and TokenFile.
	TokenFile string `yaml:"token_file"`
	// ReadyFraction is the fraction of a pool's slots that must be up for /readyz (0 < f ≤ 1;
	// default 1).
	ReadyFraction float64 `yaml:"ready_fraction"`
}

// Enabled reports whether the config asks for an admin listener.
func (c Config) Enabled() bool { return c.Listen != "" }

// Options are what the server serves.
type Options struct {
	Engine *engine.Engine // required, started by the caller
	// Pool returns the engine's pool; nil (or returning nil): no pool (/v1/pool answers 404).
	Pool func() *pool.Pool
	// Reload re-reads the configuration and applies the difference; nil: /v1/reload answers 501.
	Reload func(ctx context.Context) (ReloadResult, error)
	// Configured names the configured tunnels /readyz waits for; nil: every tunnel of the engine.
	Configured func() []string
	Version    string       // reported by /v1/status and warren_build_info
	Logger     *slog.Logger // nil: discard
}

// ReloadResult says what a reload did (POST /v1/reload; `engine run` on SIGHUP logs the same).
type ReloadResult struct {
	Opened   []string `json:"opened"`   // tunnels opened
	Closed   []string `json:"closed"`   // tunnels closed (drained)
	Switched []string `json:"switched"` // tunnels moved to another exit, make-before-break
	Updated  []string `json:"updated"`  // tunnels whose settings changed in place (Tunnel.Update): nothing running touched
	Replaced []string `json:"replaced"` // tunnels closed (drained) and opened again: a change only a new tunnel applies
	// WireGuard lists the WireGuard exits the reload added, removed or changed ("wg:a added",
	// "wg:b changed": its YAML or its file); with any, every running tunnel was updated in place.
	WireGuard []string `json:"wireguard_exits"`
	// Pool is what changed in the pool: the settings changed in place ("pool.size", "pool.rotate",
	// …), or "opened", "closed", "replaced".
	Pool         []string `json:"pool"`
	Unchanged    int      `json:"unchanged"`           // tunnels left alone
	NeedsRestart []string `json:"needs_restart"`       // sections that changed but only a restart applies
	LogLevel     string   `json:"log_level,omitempty"` // the new log level, when it changed
	// Errors are the changes that could not be applied (a port in use, an exit that refused a
	// switch); the rest was applied, and a later reload tries these again.
	Errors []string `json:"errors"`
}

// Server serves the admin API. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	opts     Options
	eng      *engine.Engine
	logger   *slog.Logger
	token    []byte // sha256 of the token; nil: no token
	loopback bool   // Listen is a loopback address: with no token, Host headers must be loopback too
	created  time.Time
	handler  http.Handler
	metrics  *metrics
	rates    rates

	// base is the context of every request; cancelled by Close when its ctx ends before the
	// handlers have returned.
	base     context.Context
	cancel   context.CancelFunc
	inflight *tracker // requests being handled

	// mu orders Start and Close; the listener and the serving goroutine are owned by the server
	// from Start until Close has released them.
	mu       sync.Mutex
	state    int // stateNew, stateServing, stateClosed
	srv      *http.Server
	addr     string
	served   chan struct{} // closed when the serving goroutine has returned
	serveErr error
}

const (
	stateNew = iota
	stateServing
	stateClosed
)

// Errors of the server's life.
var (
	ErrNotStarted = errors.New("admin: not started")
	ErrClosed     = errors.New("admin: closed")
)

// New checks cfg and makes a server; it binds nothing. Errors are *engine.FieldError naming the
// field (admin.listen, admin.token, admin.token_file, admin.ready_fraction).
func New(cfg Config, opts Options) (*Server, error) {
	if opts.Engine == nil {
		return nil, errors.New("admin: Options.Engine is required")
	}
	token, loopback, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if cfg.ReadyFraction == 0 {
		cfg.ReadyFraction = 1
	}
	s := &Server{cfg: cfg, opts: opts, eng: opts.Engine, logger: opts.Logger, loopback: loopback, created: time.Now()}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.logger = s.logger.With("component", "admin")
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		s.token = sum[:]
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.inflight = newTracker()
	s.metrics = newMetrics(s)
	s.handler = s.routes()
	return s, nil
}

func fieldErr(field, format string, args ...any) error {
	return &engine.FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks the config as New does (the token file is read); errors are *engine.FieldError
// naming the field.
func (c Config) Validate() error {
	_, _, err := c.check()
	return err
}

// check validates the config and returns the token and whether Listen is on loopback.
func (c Config) check() (token string, loopback bool, err error) {
	if c.Listen == "" {
		return "", false, fieldErr("admin.listen", "empty: the admin listener is off")
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", false, fieldErr("admin.listen", "want host:port: %v", err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return "", false, fieldErr("admin.listen", "bad port %q", cut(port))
	}
	loopback = isLoopbackHost(host)
	if c.Token != "" && c.TokenFile != "" {
		return "", false, fieldErr("admin.token", "set token or token_file, not both")
	}
	token = c.Token
	field := "admin.token"
	if c.TokenFile != "" {
		field = "admin.token_file"
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", false, fieldErr(field, "%v", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return "", false, fieldErr(field, "%s is empty", c.TokenFile)
		}
	}
	if token != "" {
		if len(token) < minTokenLen {
			return "", false, fieldErr(field, "too short: at least %d characters", minTokenLen)
		}
		for _, r := range token {
			if r <= ' ' || r > '~' {
				return "", false, fieldErr(field, "printable ASCII without spaces only")
			}
		}
	}
	if token == "" && !loopback {
		return "", false, fieldErr("admin.token", "required: admin.listen %s is not a loopback address (set admin.token or admin.token_file)", cut(c.Listen))
	}
	if c.ReadyFraction < 0 || c.ReadyFraction > 1 || c.ReadyFraction != c.ReadyFraction {
		return "", false, fieldErr("admin.ready_fraction", "%v: want 0 < fraction ≤ 1 (0: the default, 1)", c.ReadyFraction)
	}
	return token, loopback, nil
}

// isLoopbackHost: a loopback IP literal, or localhost. An empty host (every interface) is not.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// cut shortens what is echoed from config values and requests.
func cut(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}

// Start binds the listener and serves it from one goroutine until Close. Addr is valid afterwards.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateServing:
		return errors.New("admin: already started")
	case stateClosed:
		return ErrClosed
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %s: %w", cut(s.cfg.Listen), err)
	}
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.addr = ln.Addr().String()
	s.served = make(chan struct{})
	s.state = stateServing
	srv, served := s.srv, s.served
	go func() {
		defer close(served)
		// Serve closes ln when it returns (also when Close came first).
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	}()
	s.logger.Info("admin listening", "addr", s.addr, "token", s.token != nil)
	return nil
}

// Addr is the bound address of the listener ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Handler is the server's HTTP handler (authentication included), for embedders that serve it on
// a listener of their own; Start is then not needed, and Close only waits for its handlers.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops serving: the listener closes at once, requests in progress may finish until ctx
// ends; then those still running are cancelled (a drain or switch they asked for goes on in the
// engine) and Close waits for their handlers to return. Closing a closed server is a no-op.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed {
		return nil
	}
	wasServing := s.state == stateServing
	s.state = stateClosed
	var err error
	if wasServing {
		if err = s.srv.Shutdown(ctx); err != nil {
			s.cancel()
			_ = s.srv.Close()
		}
		<-s.served
	}
	s.cancel()
	s.inflight.closeAndWait() // every handler is bounded by its own timeout, and now cancelled
	if err == nil {
		err = s.serveErr
	}
	if err != nil {
		return fmt.Errorf("admin: close: %w", err)
	}
	return nil
}

// authorized checks the request's credentials: the bearer token, or (for reads, so that a browser
// can show the status page) HTTP Basic with the token as the password.
func (s *Server) authorized(r *http.Request) bool {
	if s.token == nil {
		return true
	}
	h := r.Header.Get("Authorization")
	var given string
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "bearer "):
		given = strings.TrimSpace(h[7:])
	case len(h) > 6 && strings.EqualFold(h[:6], "basic ") && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
		if err != nil {
			return false
		}
		_, pass, ok := strings.Cut(string(b), ":")
		if !ok {
			return false
		}
		given = pass
	default:
		return false
	}
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], s.token) == 1
}

// hostAllowed: without a token (loopback only), the Host header must name loopback too, so that a
// web page cannot reach the API through a DNS name rebound to 127.0.0.1.
func (s *Server) hostAllowed(r *http.Request) bool {
	if s.token != nil {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return isLoopbackHost(host)
}
