// Package engine is Warren's embedding API: start an engine, open tunnels behind local proxies, serve as an exit.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/internal/future"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// Errors callers branch on.
var (
	ErrNotStarted       = errors.New("engine not started")
	ErrEngineClosed     = errors.New("engine closed")
	ErrTunnelClosed     = actors.ErrTunnelClosed
	ErrHandshakeTimeout = actors.ErrHandshakeTimeout
	ErrSessionRefused   = actors.ErrSessionRefused
	ErrExitUnreachable  = actors.ErrExitUnreachable
	ErrDeviceFailed     = actors.ErrDeviceFailed
	ErrNATSUnavailable  = signaling.ErrNATSUnavailable
	ErrNATSAuth         = signaling.ErrNATSAuth
	ErrExitGone         = actors.ErrExitGone
	ErrBusy             = actors.ErrBusy
	ErrNotUp            = actors.ErrNotUp
	ErrNoSignaling      = actors.ErrNoSignaling
	// ErrUnknownExit: a "wg:" exit id that is not among the engine's (or the pool's) WireGuard exits.
	ErrUnknownExit = actors.ErrUnknownExit
	// ErrEndpointUnresolved: a WireGuard exit's endpoint name did not resolve.
	ErrEndpointUnresolved = actors.ErrEndpointUnresolved
	// ErrCheckFailed: a WireGuard exit answered its handshake but failed its check.
	ErrCheckFailed = actors.ErrCheckFailed
)

// EventKind names a kind of Event.
type EventKind string

// Kinds of events.
const (
	EventTunnelState   EventKind = "tunnel_state"
	EventSessionOpened EventKind = "session_opened"
	EventSessionClosed EventKind = "session_closed"
	// EventChildLost: an actor stopped without being asked to and its parent reacted (Actor names
	// it, Cause says what the parent did). Logged at error too.
	EventChildLost EventKind = "child_lost"
	// EventActorPanicked: an actor panicked and was stopped by its supervisor (Actor is its PID,
	// Cause the panic). Counted by ActorPanics.
	EventActorPanicked EventKind = "actor_panicked"
	// EventSlotState: a pool slot changed state (Pool, Slot, SlotFrom, SlotTo; Exit is the exit it
	// is on or moving to, Tunnel its tunnel).
	EventSlotState EventKind = "slot_state"
)

// Event is something that happened in the engine.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Tunnel   string               // tunnel events
	From, To messages.TunnelState // EventTunnelState
	Cause    string
	Exit     string // session events
	Session  string
	Client   string
	Actor    string // EventChildLost, EventActorPanicked
	Pool     string // EventSlotState
	Slot     int
	SlotFrom messages.SlotState
	SlotTo   messages.SlotState
}

// ExitInfo describes this engine's exit once it serves.
type ExitInfo struct {
	ID        string
	Endpoint  netip.AddrPort
	PublicKey string
	Address   netip.Addr // the exit's tunnel address
}

// Engine runs Warren's actors. Create it with New, then Start; Close releases everything.
type Engine struct {
	cfg      Config
	logger   *slog.Logger
	identity *signaling.Identity
	events   chan Event // closed by Close once shutdown has completely finished
	dropped  atomic.Int64
	panics   atomic.Int64 // actor panics seen by supervisors (a statistic; no lifecycle state)
	lost     atomic.Int64 // children lost and reacted to by their parents (a statistic)
	sigStats actors.SignalingStats
	// wg is the WireGuard exits by id (wireguard_exits): an immutable map, replaced whole by
	// SetWireGuardExits (a reload); tunnels opened or updated afterwards get the new one.
	wg       atomic.Pointer[map[string]*actors.WireGuardExit]
	counters counters // tunnel transitions and reconnections, counted by sink (status.go)
	// sinkMu orders the engine actor's sends on events with Close's close of it, for the case where
	// a shutdown that ran out of time leaves the engine actor alive for a moment.
	sinkMu     sync.Mutex
	sinkClosed bool

	// set by Start, read-only afterwards
	system  *actor.ActorSystem
	workers *actors.Workers // run the system's mailboxes and its connections' goroutines; closed after system.Shutdown
	pid     *actor.PID
	natsURL string
	exit    *ExitInfo
	started atomic.Bool
	// unsubscribe ends the supervision-event subscription; called by Close and Kill
	unsubscribe func()

	sigPID atomic.Pointer[actor.PID] // the signaling actor, once started: hears NATS state changes
	nc     atomic.Pointer[nats.Conn] // owned by the signaling actor; read here only for NATSConnectedURL and NATSStatus
	// nats: the connection's state as nats.go last reported it, for NATSStatus (a report, not
	// lifecycle state: the signaling actor hears the same changes as messages and acts on them)
	nats      atomic.Pointer[NATSStatus]
	startedAt atomic.Pointer[time.Time] // when Start succeeded

	closeOnce sync.Once
	closed    chan struct{} // closed when Close has finished
	closeErr  error
}

// New checks cfg and makes an engine; it opens nothing.
func New(cfg Config) (*Engine, error) {
	wg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, logger: cfg.Logger, events: make(chan Event, 1024), closed: make(chan struct{})}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	e.wg.Store(&wg)
	if cfg.Identity != "" {
		e.identity, err = signaling.ParseIdentity(cfg.Identity)
	} else {
		e.identity, err = signaling.NewIdentity()
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Events delivers the engine's events. It is closed only after Close has completely finished. A
// consumer that falls more than 1024 events behind loses the newest ones (counted by DroppedEvents);
// the engine never blocks on it.
func (e *Engine) Events() <-chan Event { return e.events }

// DroppedEvents counts events lost to a slow Events consumer.
func (e *Engine) DroppedEvents() int64 { return e.dropped.Load() }

// ExitStatus is the state of this engine's exit: sessions and tunnel addresses.
type ExitStatus = actors.ExitStatus

// ExitStatus reports the exit's sessions, address pool, open flows and whether it drains (zero
// without an exit, or once it has drained and stopped).
func (e *Engine) ExitStatus(ctx context.Context) (ExitStatus, error) {
	if e.pid == nil {
		return ExitStatus{}, ErrNotStarted
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.GetExitStatus{}, untilDeadline(ctx, 5*time.Second)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return ExitStatus{}, ErrEngineClosed
		}
		return ExitStatus{}, err
	}
	return *res.(*actors.ExitStatus), nil
}

// SignalingStats counts signaling messages dropped or refused since Start (docs/security.md).
type SignalingStats struct {
	Forged     int64 // replies, pongs and goodbyes that failed verification or answered another request
	Unsigned   int64 // unsigned refusals (never taken as answers)
	Untrusted  int64 // answers signed by an identity not trusted for that exit
	Replayed   int64 // requests this engine's exit had seen before
	Refused    int64 // requests this engine's exit refused, for any reason
	Unanswered int64 // requests that found no exit, or were told to retry
	Stale      int64 // goodbyes for sessions not (or no longer) here: never acted on
	// SlowConsumer counts the times NATS reported dropping messages for one of this engine's
	// subscriptions because they came faster than they were read.
	SlowConsumer int64
	// Dropped counts messages to this engine's subjects (its exit's requests, exits' goodbyes to
	// its tunnels, exits' announcements) dropped because 4096 were already waiting to be handled
	// (a flood), announcements also because 1024 were waiting for the exit directory, or because
	// it lists 8192 exits already.
	Dropped int64
	// Exits' announcements and answers to discovery dropped by the exit directory (Exits), by why:
	// undecodable, invalid or oversize; a bad signature or a timestamp off the clock; an identity
	// not trusted for the exit id; no newer than what the directory has or had of that exit (a
	// replay). None of them changed the directory.
	AnnouncementsMalformed, AnnouncementsForged, AnnouncementsUntrusted, AnnouncementsStale int64
}

// SignalingStats returns the counters of dropped and refused signaling messages.
func (e *Engine) SignalingStats() SignalingStats {
	s := &e.sigStats
	return SignalingStats{Forged: s.Forged.Load(), Unsigned: s.Unsigned.Load(), Untrusted: s.Untrusted.Load(),
		Replayed: s.Replayed.Load(), Refused: s.Refused.Load(), Unanswered: s.Unanswered.Load(), Stale: s.Stale.Load(),
		SlowConsumer: s.SlowConsumer.Load(), Dropped: s.Dropped.Load(),
		AnnouncementsMalformed: s.AnnouncementsMalformed.Load(), AnnouncementsForged: s.AnnouncementsForged.Load(),
		AnnouncementsUntrusted: s.AnnouncementsUntrusted.Load(), AnnouncementsStale: s.AnnouncementsStale.Load()}
}

// ActorPanics counts actors that panicked and were stopped by their supervisors since Start. Each
// is logged at error with its stack and reported as EventActorPanicked; a healthy engine has none.
func (e *Engine) ActorPanics() int64 { return e.panics.Load() }

// ChildrenLost counts actors that stopped without their parent asking, each reported as
// EventChildLost with the parent's reaction; a healthy engine has none.
func (e *Engine) ChildrenLost() int64 { return e.lost.Load() }

// ClientID is this engine's identity as exits see it.
func (e *Engine) ClientID() string { return e.identity.ID() }

// NATSConnectedURL is the NATS server the engine is connected to right now ("" while disconnected;
// signaling.InProcessURL when connected in-process to its embedded server). Passwords are redacted.
func (e *Engine) NATSConnectedURL() string {
	nc := e.nc.Load()
	if nc == nil {
		return ""
	}
	return nc.ConnectedUrlRedacted()
}

// NATSURL is where other engines join this engine's signaling: the first of nats.urls; for the
// embedded server, its listener's client URL (nats://IP:port, loopback when it listens on every
// interface) if nats.embedded_listen is set, else "": the server has no listener and only this
// engine, connected in-process, can reach it.
func (e *Engine) NATSURL() string { return e.natsURL }

// Exit describes the exit this engine serves, if any.
func (e *Engine) Exit() (ExitInfo, bool) {
	if e.exit == nil {
		return ExitInfo{}, false
	}
	return *e.exit, true
}

// Start connects signaling (starting the embedded NATS server if no URL is configured), starts the
// actors, and brings the exit up if one is configured. It returns when the exit serves. A refused
// NATS login wraps ErrNATSAuth, any other NATS failure ErrNATSUnavailable.
func (e *Engine) Start(ctx context.Context) error {
	select {
	case <-e.closed:
		return ErrEngineClosed
	default:
	}
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine already started")
	}
	var srv *server.Server
	n, err := e.cfg.NATS.resolve()
	if err != nil {
		return err
	}
	timeout := n.timeout
	copts := signaling.ConnectOptions{URLs: n.urls, Name: "warren-" + e.identity.ID()[:8], Timeout: timeout,
		User: n.user, Password: n.password, Token: n.token, NKeySeedFile: n.nkeySeed, CredentialsFile: n.creds,
		TLS: n.tls, Logger: e.logger, RetryOnFailedConnect: n.wait,
		// Replies come to _INBOX.<client id>.…, so server permissions can give each client its own inbox.
		InboxPrefix: "_INBOX." + e.identity.ID(),
		OnState: func(s signaling.ConnState) {
			e.natsChanged(s) // for NATSStatus
			// nats.go's goroutine: hand the change to the signaling actor as a message.
			if pid := e.sigPID.Load(); pid != nil && e.system != nil {
				e.system.Root.Send(pid, &actors.NATSState{Connected: s.Status == nats.CONNECTED, URL: s.URL, Err: s.Err})
			}
		}}
	if len(n.urls) == 0 {
		// The embedded server: this engine connects in-process; it listens only if asked.
		if srv, err = signaling.StartEmbedded(signaling.EmbeddedOptions{Listen: n.listen, User: n.user,
			Password: n.password, Token: n.token, Ready: timeout}); err != nil {
			if n.listen.IsValid() {
				return fmt.Errorf("start engine: nats.embedded_listen %s: %w", n.listen, err)
			}
			return fmt.Errorf("start engine: %w", err)
		}
		copts.InProcess = srv
		e.natsURL = signaling.EmbeddedURL(srv)
	} else {
		e.natsURL = n.urls[0]
	}
	copts.OnAsyncError = func(_ string, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) { // NATS dropped messages for one of our subscriptions
			e.sigStats.SlowConsumer.Add(1)
		}
	}
	nc, err := signaling.Connect(copts)
	if err == nil {
		e.natsStarted(nc)
	}
	if err != nil {
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
		return fmt.Errorf("start engine: %w%s", err, connectHint(err))
	}

	if e.cfg.Trust.AnyExit && e.cfg.NATS.shared() {
		e.logger.Warn("trust.any_exit: tunnels accept any identity for exits that are neither pinned nor certified; anyone on the NATS bus can answer as an exit")
	}
	// The exit's config is resolved before the actor system exists: a bad one leaves nothing behind.
	var exitCfg *actors.ExitConfig
	if x := e.cfg.Exit; x != nil {
		xc, err := e.exitConfig(x)
		if err != nil {
			nc.Close()
			if srv != nil {
				srv.Shutdown()
				srv.WaitForShutdown()
			}
			return err
		}
		exitCfg = &xc
	}
	protoLog := e.logger.With("component", "protoactor")
	e.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(levelFloor{protoLog.Handler(), slog.LevelWarn})
	}),
		// A dead letter (a message to an actor that just stopped, normal during shutdown) starts a
		// throttle goroutine that lives one interval: keep it short so Close leaves nothing behind.
		actor.WithDeadLetterThrottleInterval(50*time.Millisecond))
	compactRegistry(e.system)
	e.workers = actors.NewWorkers(max(8, 4*runtime.GOMAXPROCS(0)))
	e.workers.Register(e.system)
	// Every supervisor directive (here always a stop after a panic) is counted and reported as an
	// event through the engine actor, whose name is fixed, so the PID is known before it exists.
	enginePID := actor.NewPID(e.system.Address(), "engine")
	system := e.system
	panicSub := e.system.EventStream.Subscribe(func(evt any) {
		if se, ok := evt.(*actor.SupervisorEvent); ok {
			e.panics.Add(1)
			system.Root.Send(enginePID, &messages.ActorPanicked{Actor: se.Child.String(), Reason: fmt.Sprint(se.Reason), At: time.Now()})
		}
	})
	e.unsubscribe = func() { system.EventStream.Unsubscribe(panicSub) }
	ecfg := actors.EngineConfig{
		Signaling: actors.SignalingConfig{Conn: nc, Server: srv, Logger: e.logger, ClientID: e.identity.ID(),
			Identity: e.identity, Stats: &e.sigStats, ExitCertificate: exitCert(e.cfg.Exit)},
		Sink:   e.sink,
		Logger: e.logger,
		// Pins are per tunnel: the directory trusts what the engine's operators certify, or any
		// exit where declared, and any exit on a private bus (as OpenTunnel does).
		Directory: actors.DirectoryConfig{Trust: signaling.ExitTrust{Operators: e.cfg.Trust.Operators,
			AnyExit: e.cfg.Trust.AnyExit || !e.cfg.NATS.shared()}},
	}
	ecfg.Exit = exitCfg
	// From here on the signaling actor owns nc and srv; Close releases them.
	e.pid, err = e.system.Root.SpawnNamed(actors.NewEngineProps(ecfg), "engine")
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
		e.unsubscribe()
		e.system.Shutdown()
		e.closeWorkers()
		e.system = nil
		return fmt.Errorf("spawn engine: %w", err)
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.StartEngine{}, untilDeadline(ctx, 30*time.Second)))
	if err == nil {
		if st, ok := res.(*actors.EngineStarted); ok {
			err = st.Err
			e.sigPID.Store(st.Signaling)
			if st.Exit != nil && st.Err == nil {
				e.exit = &ExitInfo{ID: e.cfg.Exit.ID, Endpoint: st.Exit.Endpoint, PublicKey: st.Exit.PublicKey.String(), Address: st.Exit.Address}
			}
		}
	}
	if err == nil && nc.IsConnected() { // (with wait_on_start it may not be yet: they are sent on connect)
		err = nc.FlushTimeout(timeout) // subscriptions are registered with the server before Start returns
	}
	if err != nil {
		_ = e.Close(context.Background())
		return fmt.Errorf("start engine: %w", err)
	}
	now := time.Now()
	e.startedAt.Store(&now)
	return nil
}

func (e *Engine) exitConfig(x *ExitConfig) (actors.ExitConfig, error) {
	r, err := x.resolve()
	if err != nil {
		return actors.ExitConfig{}, err
	}
	if x.PrivateKey == "" {
		if r.key, err = signaling.NewPrivateKey(); err != nil {
			return actors.ExitConfig{}, err
		}
	}
	xc := actors.ExitConfig{ID: x.ID, PrivateKey: r.key, Listen: r.listen, Endpoint: r.endpoint, Subnet: r.subnet,
		MTU: r.mtu, ConnectPort: r.port, Egress: r.egress, AllowedClients: x.AllowedClients,
		// Validate refuses an exit on a shared bus that would admit anyone without saying so.
		Open:      x.Open || (len(x.AllowedClients) == 0 && len(e.cfg.Trust.Operators) == 0),
		Operators: e.cfg.Trust.Operators, Certificate: x.Certificate, Stats: &e.sigStats,
		MaxSessionsPerClient: r.maxSessions, RequestRate: r.rate, RequestBurst: r.burst,
		Conn:    r.limits.timeouts(orDuration(x.ConnectTimeout, DefaultConnectTimeout)),
		UDPIdle: orDuration(x.UDPIdleTimeout, DefaultUDPIdleTimeout), MaxConnsPerSession: r.maxFlows, UDPMaxDestinations: r.udpDests,
		SessionIdle: sessionIdle(x.SessionIdleTimeout), Labels: maps.Clone(x.Labels),
		AnnounceInterval: r.announce, DrainTimeout: r.drain,
		Logger: e.logger, Identity: e.identity}
	for _, sp := range r.static {
		xc.StaticPeers = append(xc.StaticPeers, actors.StaticPeer{Name: sp.name, PublicKey: sp.key, Addresses: sp.addrs})
	}
	return xc, nil
}

func exitCert(x *ExitConfig) string {
	if x == nil {
		return ""
	}
	return x.Certificate
}

func sessionIdle(d Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return orDuration(d, 3*time.Minute)
}

// sink runs on the engine actor only, so sends never race with the close of e.events in Close.
func (e *Engine) sink(m any) {
	ev := Event{Time: time.Now()}
	switch m := m.(type) {
	case *messages.TunnelStateChanged:
		e.counters.transition(m)
		ev.Kind, ev.Tunnel, ev.From, ev.To, ev.Cause, ev.Time = EventTunnelState, m.TunnelID, m.From, m.To, m.Cause, m.At
	case *messages.SessionOpened:
		ev.Kind, ev.Exit, ev.Session, ev.Client = EventSessionOpened, m.ExitID, m.SessionID, m.ClientID
	case *messages.SessionClosed:
		ev.Kind, ev.Exit, ev.Session, ev.Cause = EventSessionClosed, m.ExitID, m.SessionID, m.Reason
	case *messages.ChildLost:
		e.lost.Add(1)
		ev.Kind, ev.Tunnel, ev.Actor, ev.Cause, ev.Time = EventChildLost, m.TunnelID, m.Parent+"/"+m.Child, m.Action, m.At
	case *messages.ActorPanicked:
		ev.Kind, ev.Actor, ev.Cause, ev.Time = EventActorPanicked, m.Actor, m.Reason, m.At
	case *messages.SlotStateChanged:
		ev = slotEvent(m)
	default:
		return
	}
	e.sinkMu.Lock()
	defer e.sinkMu.Unlock()
	if e.sinkClosed {
		return
	}
	select {
	case e.events <- ev:
	default:
		e.dropped.Add(1)
	}
}

// Stats are connection statistics by role.
type Stats struct {
	Client messages.ConnectionStats // connections proxied by this engine's tunnels
	Exit   messages.ConnectionStats // connections forwarded by this engine's exit
}

// Stats returns connection counters by role, side and end reason, and the active connections.
// Bytes count what every connection of the role delivered so far, ended or active (a tunnel's
// copy loops and an exit's add to them as bytes move), so they only grow.
func (e *Engine) Stats(ctx context.Context) (Stats, error) {
	if e.pid == nil {
		return Stats{}, ErrNotStarted
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.GetEngineStats{}, untilDeadline(ctx, 5*time.Second)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return Stats{}, ErrEngineClosed
		}
		return Stats{}, err
	}
	by := res.(*actors.EngineStatsResponse).ByRole
	fill := func(s messages.ConnectionStats) messages.ConnectionStats {
		if s.ByEnd == nil {
			s.ByEnd = map[messages.Side]map[messages.EndReason]uint64{messages.SideIncoming: {}, messages.SideOutgoing: {}}
		}
		return s
	}
	return Stats{Client: fill(by["client"]), Exit: fill(by["exit"])}, nil
}

// Kill stops the engine at once, as if its process had died: the NATS connection is closed first,
// so no goodbye is sent, and nothing drains; then every actor stops and releases its resources.
// Peers notice only through their own health checks. Meant for fault tests and emergencies; Close
// is the normal way. Events() is closed after.
func (e *Engine) Kill() {
	if pid := e.sigPID.Load(); pid != nil {
		_, _ = await(context.Background(), e.system.Root.RequestFuture(pid, &actors.DropConnection{}, 2*time.Second))
	}
	e.closeOnce.Do(func() {
		defer close(e.closed)
		defer e.closeEvents()
		if e.system == nil {
			return
		}
		if e.pid != nil {
			_ = e.system.Root.StopFuture(e.pid).Wait()
		}
		e.unsubscribe()
		e.system.Shutdown()
		e.closeWorkers()
	})
	<-e.closed
}

// workersWait bounds the wait for the actor system's workers once it has stopped: each actor has
// waited for its own goroutines by then, so only a system that did not stop in time (its stop
// future gave up) leaves one running.
const workersWait = 5 * time.Second

// closeWorkers closes the actor system's workers after system.Shutdown, waiting up to workersWait.
func (e *Engine) closeWorkers() {
	ctx, cancel := context.WithTimeout(context.Background(), workersWait)
	defer cancel()
	if err := e.workers.Close(ctx); err != nil {
		e.logger.Warn("engine closed with an actor's goroutine still running", "err", err)
	}
}

func (e *Engine) closeEvents() {
	e.sinkMu.Lock()
	e.sinkClosed = true
	close(e.events)
	e.sinkMu.Unlock()
}

// Close shuts down gracefully: the tunnels drain (each then says goodbye to its exit) and, at the
// same time, the exit drains as DrainExit does (its clients move to other exits while its flows
// finish, then it says goodbye to those left); then signaling and the embedded NATS server stop.
// It returns when everything has been released, or when ctx ends (then both drains are cut short
// and the rest is stopped at once, still before Close returns). Events() is closed after. Close is
// idempotent.
func (e *Engine) Close(ctx context.Context) error {
	e.closeOnce.Do(func() {
		defer close(e.closed)
		defer e.closeEvents()
		if e.system == nil {
			return
		}
		if e.pid != nil {
			done := resultOf(e.system.Root.RequestFuture(e.pid, &actors.Shutdown{}, untilDeadline(ctx, time.Minute)+forceGrace))
			select {
			case r := <-done:
				if r.Err != nil {
					e.closeErr = fmt.Errorf("graceful shutdown: %w", r.Err)
				}
			case <-ctx.Done():
				e.closeErr = fmt.Errorf("graceful shutdown: %w", ctx.Err())
				// Out of time: skip the drains but keep the order, so goodbyes still go out.
				e.system.Root.Send(e.pid, &actors.Shutdown{Force: true})
				<-done // the future's own timeout bounds this
			}
			_ = e.system.Root.StopFuture(e.pid).Wait()
		}
		e.unsubscribe()
		e.system.Shutdown()
		e.closeWorkers()
	})
	<-e.closed
	return e.closeErr
}

// The engine's waits on futures (internal/future).
var (
	resultOf      = future.ResultOf
	awaitResult   = future.AwaitResult
	await         = future.Await
	untilDeadline = future.UntilDeadline
)

// forceGrace bounds a forced shutdown after Close's context ended: tunnels stop without draining,
// then the exit, then signaling.
const forceGrace = 3 * time.Second

// levelFloor drops records below a level (protoactor logs routine INFO lines).
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(a), h.min}
}

func (h levelFloor) WithGroup(n string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(n), h.min}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
