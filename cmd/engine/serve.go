package main

// serve runs a node: the engine, its configured tunnels and pool, the admin listener, and the
// signals. One goroutine (serve's) owns the signals; reloads run one at a time on the node's
// reload goroutine, which also owns n.cur; the pool handle is published for the admin API.
//
//	starting ──engine started, tunnels bound, pool placed──▶ running ──configured tunnels Up──▶ "ready" printed
//	starting / running ──SIGHUP / POST /v1/reload──▶ queued; (reload goroutine, once started) re-read,
//	                       diff, apply, one at a time, SIGHUPs that wait coalesced ──▶ running
//	starting / running ──SIGINT or SIGTERM──▶ draining (Engine.Close) ──▶ exit 0
//	draining ──second SIGINT or SIGTERM──▶ exit 130 at once

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
	"github.com/warren-tunnel/warren/signaling"
)

// node is what `engine run` (and `engine demo`) runs.
type node struct {
	path   string // the config file reloads re-read ("" for the demo: no reload)
	eng    *engine.Engine
	logger *slog.Logger
	level  *slog.LevelVar
	cur    runConfig                 // what runs; the reload goroutine's only (and serve's before it starts)
	pool   atomic.Pointer[pool.Pool] // the running pool, nil without one; read by the admin API
	// reloads carries reload requests to the reload goroutine; each is answered on its reply.
	reloads chan reloadReq
	hup     chan struct{} // a SIGHUP's reload, pending (capacity 1: they coalesce)
	// changed is signalled (coalesced) on every tunnel state change, for the ready line.
	changed chan struct{}
	grace   atomic.Int64 // graceFor(cur), as a time.Duration: kept by the reload goroutine
	// reloaded is signalled (coalesced) after each reload has stored what is configured, so that
	// the ready line's check looks again (no tunnel event may follow a tunnel's removal).
	reloaded chan struct{}
	// poolWanted: the current config has a pool (set at start and by each reload).
	poolWanted atomic.Bool
	// configured names the configured tunnels, for /readyz: set at start and by each reload.
	configured atomic.Pointer[[]string]
	// adminCfg is the admin listener to serve (nil: none); adminOptional: a listener that cannot
	// bind is logged and done without (the demo), instead of failing the start.
	adminCfg      *admin.Config
	adminOptional bool
	// override applies the command line to a config read from the file (at start and at each
	// reload): --log-level, and nats.wait_on_start for engine run.
	override func(*runConfig)
	admin    atomic.Pointer[admin.Server] // set by start; closed after the engine
}

// errNoConfigFile: a reload of a node that runs without a config file (the demo).
var errNoConfigFile = errors.New("no config file to reload: this engine runs without one (engine demo)")

type reloadReq struct {
	reply chan reloadReply // buffered
}

type reloadReply struct {
	res reloadResult
	err error
}

// newLogger builds the process's logger: text or JSON lines on stderr at a level that reloads change.
func newLogger(format, level string, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(parseLevel(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

// serve starts the node, prints the ready line once the configured tunnels are up, reloads on
// SIGHUP, and shuts down on a signal: the first SIGINT or SIGTERM gracefully, a second at once.
func serve(rc runConfig, path string, override func(*runConfig), adminCfg *admin.Config, adminOptional bool) int {
	if err := rc.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "engine: %v\n", err)
		return exitUsage
	}
	logger, level := newLogger(rc.LogFormat, rc.LogLevel, os.Stderr)
	cfg := rc.Config
	cfg.Logger = logger
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	eng, err := engine.New(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine: %v\n", err)
		return exitUsage
	}
	n := &node{path: path, eng: eng, logger: logger, level: level, cur: rc, reloads: make(chan reloadReq), hup: make(chan struct{}, 1),
		changed: make(chan struct{}, 1), reloaded: make(chan struct{}, 1), adminCfg: adminCfg, adminOptional: adminOptional, override: override}
	names := n.configuredNames()
	n.configured.Store(&names)
	n.poolWanted.Store(rc.Pool != nil)
	defer func() { closeAdmin(n.admin.Load()) }()
	go n.logEvents()
	started, stopReloads := make(chan struct{}), make(chan struct{})
	defer close(stopReloads)
	go n.reloadLoop(started, stopReloads) // owns n.cur once started is closed
	startCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startErr := make(chan error, 1)
	go func() { startErr <- n.start(startCtx) }()
	for up := false; !up; {
		select {
		case err := <-startErr:
			if err != nil {
				fmt.Fprintf(os.Stderr, "engine: %v\n", err)
				_ = eng.Close(context.Background())
				return exitFailure
			}
			up = true
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				logger.Info("SIGHUP during start: the file is reloaded once started")
				n.hangup()
				continue
			}
			fmt.Fprintf(os.Stderr, "engine: %v during start; shutting down (again to force)\n", sig)
			cancel()
			for {
				select {
				case <-startErr:
					return n.shutdown(sigs, graceFor(rc))
				case sig := <-sigs:
					if sig != syscall.SIGHUP {
						fmt.Fprintf(os.Stderr, "engine: %v again: forcing exit\n", sig)
						return exitForced
					}
				}
			}
		}
	}
	go n.awaitReady()
	n.grace.Store(int64(graceFor(n.cur)))
	close(started)
	for {
		sig := <-sigs
		if sig == syscall.SIGHUP {
			n.hangup()
			continue
		}
		fmt.Fprintf(os.Stderr, "engine: %v: shutting down gracefully (again to force)\n", sig)
		return n.shutdown(sigs, time.Duration(n.grace.Load()))
	}
}

// start starts the engine and opens the configured tunnels (StartTunnel: each keeps trying until
// its exit answers) and pool.
func (n *node) start(ctx context.Context) error {
	if err := n.eng.Start(ctx); err != nil {
		return err
	}
	srv, err := n.startAdmin(n.adminCfg)
	switch {
	case err != nil && n.adminOptional:
		n.logger.Warn("admin API not started", "err", err)
	case err != nil:
		return err
	}
	n.admin.Store(srv)
	if x, ok := n.eng.Exit(); ok {
		natsURL := signaling.RedactURLs(n.eng.NATSURL())
		if natsURL == "" { // the embedded server without a listener
			natsURL = "in-process"
		}
		fmt.Printf("exit %s serving: endpoint=%s public_key=%s nats=%s\n", x.ID, x.Endpoint, x.PublicKey, natsURL)
	}
	for i, spec := range n.cur.Tunnels {
		if err := ctx.Err(); err != nil {
			return err
		}
		spec.Name = tunnelName(spec, i)
		if _, err := n.eng.StartTunnel(ctx, spec); err != nil {
			return err
		}
	}
	if n.cur.Pool != nil {
		if err := n.openPool(ctx, *n.cur.Pool); err != nil {
			return err
		}
	}
	return nil
}

// readyLine is what `engine run` prints once ready: the configured tunnels' proxies and the pool's.
func (n *node) readyLine() string {
	line := "ready"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := *n.configured.Load()
	for _, name := range names {
		t, err := n.eng.Tunnel(ctx, name)
		if err != nil {
			continue
		}
		if len(names) > 1 {
			line += " tunnel=" + t.ID()
		}
		if a := t.SOCKSAddr(); a != "" {
			line += " socks5=" + a
		}
		if a := t.HTTPAddr(); a != "" {
			line += " http=" + a
		}
	}
	if p := n.pool.Load(); p != nil {
		line += fmt.Sprintf(" pool=%s", p.Name())
		if r := p.SOCKSPorts(); r.Count > 0 {
			line += " pool_socks5=" + r.String()
		}
		if r := p.HTTPPorts(); r.Count > 0 {
			line += " pool_http=" + r.String()
		}
	}
	return line
}

// awaitReady prints line once every configured tunnel is Up and the pool has admin.ready_fraction
// of its slots up (checked at every tunnel and slot transition); until then /readyz says what is
// missing. A tunnel that cannot come up
// is logged by the engine as it retries.
func (n *node) awaitReady() {
	for {
		if n.allUp(*n.configured.Load()) {
			if up, size, ok := n.poolReady(); ok {
				line := n.readyLine() // as it is now: a reload may have changed what runs
				if size >= 0 {
					line += fmt.Sprintf(" slots=%d up=%d", size, up)
				}
				fmt.Println(line)
				return
			}
		}
		select {
		case _, ok := <-n.changed:
			if !ok {
				return
			}
		case <-n.reloaded:
		}
	}
}

// poolReady reports whether the pool (if any) has at least the ready fraction of its slots up (as
// /readyz counts them), with its slots up and its size (-1 without a pool).
func (n *node) poolReady() (up, size int, ok bool) {
	p := n.pool.Load()
	if p == nil {
		// None runs: none is configured, or one is between its close and its opening (a reload
		// replaces it, or it failed to open and the next reload opens it).
		return 0, -1, !n.poolWanted.Load()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slots, err := p.Slots(ctx)
	if err != nil {
		return 0, 0, false
	}
	for _, s := range slots {
		if s.State == messages.SlotUp || s.State == messages.SlotMoving {
			up++
		}
	}
	fraction := 1.0
	if n.adminCfg != nil && n.adminCfg.ReadyFraction > 0 {
		fraction = n.adminCfg.ReadyFraction
	}
	return up, len(slots), float64(up) >= math.Ceil(fraction*float64(len(slots))-1e-9) // as /readyz
}

// allUp reports whether every tunnel named is open and serving (as /readyz counts it).
func (n *node) allUp(names []string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range names {
		t, err := n.eng.Tunnel(ctx, name)
		if err != nil {
			return false
		}
		info, err := t.Info(ctx)
		if err != nil || !info.State.Serving() {
			return false
		}
	}
	return true
}

// logEvents drains the engine's events into the log (so the engine never drops them silently) and
// signals tunnel transitions to awaitReady. It ends when the engine has closed.
func (n *node) logEvents() {
	defer close(n.changed)
	for ev := range n.eng.Events() {
		n.logger.Debug("event", "kind", ev.Kind, "tunnel", ev.Tunnel, "from", ev.From, "to", ev.To, "cause", ev.Cause, "session", ev.Session)
		if ev.Kind == engine.EventTunnelState || ev.Kind == engine.EventSlotState {
			select {
			case n.changed <- struct{}{}:
			default:
			}
		}
	}
}

// reloadLoop runs reloads one at a time, once started is closed, until stop is. Each runs under
// its own deadline (reloadWait), whatever happens to whoever asked: a reload is never left half
// applied because a client went away.
func (n *node) reloadLoop(started, stop <-chan struct{}) {
	select {
	case <-started:
	case <-stop:
		return
	}
	run := func() (reloadResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), reloadWait)
		defer cancel()
		return n.reload(ctx)
	}
	for {
		select {
		case <-stop: // first: a reload never starts once the node is done
			return
		default:
		}
		select {
		case <-stop:
			return
		case <-n.hup:
			if _, err := run(); err != nil {
				n.logger.Error("reload refused: nothing changed", "err", err)
			}
		case req := <-n.reloads:
			res, err := run()
			req.reply <- reloadReply{res, err} // buffered: the caller may have given up
		}
	}
}

// hangup asks for a reload after SIGHUP; SIGHUPs that come while one waits make one reload.
func (n *node) hangup() {
	select {
	case n.hup <- struct{}{}:
	default:
	}
}

// requestReload reloads the config file and applies it (POST /v1/reload), and returns what it
// did; ctx bounds only the wait (the reload itself runs to its end). An unreadable or invalid file
// changes nothing: the error names the field.
func (n *node) requestReload(ctx context.Context) (reloadResult, error) {
	reply := make(chan reloadReply, 1)
	select {
	case n.reloads <- reloadReq{reply: reply}:
	case <-ctx.Done():
		return reloadResult{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.res, r.err
	case <-ctx.Done():
		return reloadResult{}, ctx.Err()
	}
}

func (n *node) reload(ctx context.Context) (reloadResult, error) {
	if n.path == "" {
		return reloadResult{}, errNoConfigFile
	}
	next, err := loadConfig(n.path)
	if err != nil {
		if !errors.Is(err, engine.ErrInvalidConfig) { // unreadable, or not YAML: still the file's fault
			err = fmt.Errorf("%w: %w", engine.ErrInvalidConfig, err)
		}
		return reloadResult{}, err
	}
	if n.override != nil {
		n.override(&next)
	}
	return n.applyConfig(ctx, next), nil
}

func (n *node) openPool(ctx context.Context, cfg pool.Config) error {
	p, err := pool.Open(ctx, n.eng, cfg)
	if err != nil {
		return err
	}
	n.pool.Store(p)
	return nil
}

// closePool closes the running pool and forgets it; one whose close failed and that still runs is
// kept (a later reload tries again).
func (n *node) closePool(ctx context.Context) error {
	p := n.pool.Load()
	if p == nil {
		return nil
	}
	err := p.Close(ctx, 0)
	if err != nil {
		if _, serr := p.Slots(ctx); !errors.Is(serr, pool.ErrClosed) {
			return err // still there
		}
	}
	n.pool.Store(nil)
	return err
}

func (n *node) closeTunnel(ctx context.Context, name string) error {
	t, err := n.eng.Tunnel(ctx, name)
	if err != nil {
		if errors.Is(err, engine.ErrTunnelNotFound) {
			return nil // closed already (through the admin API)
		}
		return err
	}
	return t.Close(ctx)
}

// graceFor is shutdownGrace, or longer when a drain needs it: the longest of the exit's, the
// tunnels' and the pool's drain_timeout, and 10 s for the rest of the shutdown.
func graceFor(rc runConfig) time.Duration {
	drain := time.Duration(0)
	if rc.Exit != nil {
		drain = max(drain, time.Duration(rc.Exit.DrainTimeout))
	}
	for _, t := range rc.Tunnels {
		drain = max(drain, time.Duration(t.DrainTimeout))
	}
	if rc.Pool != nil {
		drain = max(drain, time.Duration(rc.Pool.Tunnel.DrainTimeout))
	}
	return max(shutdownGrace, drain+10*time.Second)
}

// shutdown closes the engine gracefully within grace; a second signal forces the exit.
func (n *node) shutdown(sigs <-chan os.Signal, grace time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.eng.Close(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(os.Stderr, "engine: shutdown: %v\n", err)
				return exitFailure
			}
			return exitOK
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue // no reload while shutting down
			}
			fmt.Fprintf(os.Stderr, "engine: %v again: forcing exit\n", sig)
			return exitForced
		}
	}
}
