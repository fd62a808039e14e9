package actors

// The exit actor owns an exit's identity, its address pool and its session table. Its device (a
// child) runs one WireGuard device for every client; each session or static peer is a peer actor
// under the device, and each forwarded flow a connection actor under its peer.
//
//	Starting ──device ready, static peers added, subscribed──▶ Serving ──drainExit──▶ Draining
//	   │                                                          │                     │
//	   │                                                          │   no session or no flow left,
//	   │                                                          │   or drain_timeout ──▶ Ending
//	   │                                                          ├──endWith(why)──▶ Ending ◀── endWith(why) (a forced shutdown)
//	   │                                                          └──device lost──▶ stop
//	   └──device, a static peer or the subscription failed──▶ ExitReady{Err} to ReadyTo, stop
//	Draining: session requests refused "draining"; draining announced at once; each client session
//	          told (a signed session.draining); sessions and flows go on (exit_drain.go).
//	Ending: leaving announced, goodbye to every client session, then endWith(why) to the device
//	        (which ends its peers, which end their connections)
//	        ──device terminated, or childrenEndWait (5 s; warning)──▶ stop
//	Stopping (unless it was Ending): the same announcement and goodbyes; its children stop with it.
//
// The engine drains the exit (Engine.DrainExit, Engine.Close): once the drain is over it ends
// itself with endWith(engine_shutdown), so that its connections record why; the goodbyes go out
// first, before the engine stops signaling. Stopped from outside (it failed to start, its device
// stopped, the actor system shut down), it says the same goodbyes in Stopping and its children are
// stopped with it: their connections end with their default, tunnel_closed.
//
// While Serving and Draining it announces itself on warren.v1.exits.announce every
// AnnounceInterval, and at once on every change of state (exit_announce.go).
//
// A session request arrives verified (signature, clock: the signaling actor), is admitted (allowed
// clients, replay, limits: exit_admission.go) and given addresses (exit_sessions.go),
// and its peer added before it is answered. A client's goodbye stops that peer at once: the
// WireGuard peer is removed and its flows end, with no handshake or keepalive timeout involved.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
)

// StaticPeer is a standard WireGuard client configured on the exit, with no signaling.
type StaticPeer struct {
	Name      string
	PublicKey signaling.Key
	Addresses []netip.Addr
}

// ExitConfig is an exit, resolved and validated by the engine.
type ExitConfig struct {
	ID                   string
	PrivateKey           signaling.Key
	Listen               netip.AddrPort // UDP bind
	Endpoint             netip.AddrPort // advertised to clients; invalid: the bound address
	Subnet               netip.Prefix   // tunnel addresses; the exit takes the first host address
	MTU                  int
	ConnectPort          uint16
	Egress               netstack.EgressPolicy
	StaticPeers          []StaticPeer
	AllowedClients       []string     // identity ids admitted (besides Open and operator-certified clients)
	Open                 bool         // admit any client with a valid signature
	Operators            []string     // operator public keys: clients they certify are admitted
	Certificate          string       // this exit's operator certificate, presented in every response
	MaxSessionsPerClient int          // sessions at once per client identity; 0 unlimited
	RequestRate          float64      // session requests per second per client identity; 0 unlimited
	RequestBurst         int          // the rate's burst
	Conn                 ConnTimeouts // for forwarded connections (Setup is the destination dial)
	UDPIdle              time.Duration
	MaxConnsPerSession   int // flows at once per session or static peer; 0 unlimited
	UDPMaxDestinations   int // destinations one SOCKS5 UDP association's exit half sends to; 0 unlimited
	// SessionIdle releases a session whose client sent nothing for this long (it died without a
	// goodbye: live tunnels send keepalives and health probes). 0: never.
	SessionIdle time.Duration
	Signaling   *actor.PID
	Events      *actor.PID
	Logger      *slog.Logger
	ReadyTo     *actor.PID          // hears one *ExitReady
	Stats       *SignalingStats     // goodbyes dropped; nil: not kept
	Bytes       *ByteTotals         // the engine's byte totals of forwarded flows (set by the engine actor); nil: none
	Identity    *signaling.Identity // signs the exit's goodbyes and announcements; announced in session responses
	Labels      map[string]string   // announced; read only
	// AnnounceInterval is the cadence of the exit's announcements; 0: it neither announces nor
	// answers discovery.
	AnnounceInterval time.Duration
	// DrainTimeout bounds a drain: how long the flows left may run once the exit drains; 0: none
	// (a drain ends the exit at once).
	DrainTimeout time.Duration
}

// ExitReady tells the engine the exit serves (Err nil) or could not start.
type ExitReady struct {
	Endpoint  netip.AddrPort
	PublicKey signaling.Key
	Address   netip.Addr
	Err       error
}

type exitSession struct {
	id, clientID string
	key          signaling.Key
	lastRx       int64     // the peer's receive counter at the last sweep
	lastActive   time.Time // when it last moved (or the session opened)
	lastPing     int64     // timestamp of the last ping answered: older ones are replays
	peer         *actor.PID
	addrs        []netip.Addr
	since        time.Time // when it was granted
	flows        int       // forwarded connections open (flowsChanged from its peer)
}

// pendingSession is a session being set up: whose it is, and whether its client already said goodbye.
type pendingSession struct {
	clientID string
	gone     bool
}

type exitActor struct {
	cfg       ExitConfig
	behavior  actor.Behavior
	addr      netip.Addr // the exit's own tunnel address
	device    *actor.PID
	endpoint  netip.AddrPort
	used      map[netip.Addr]bool
	next      netip.Addr
	sessions  map[string]*exitSession    // by session id
	byPeer    map[string]*exitSession    // by peer PID id
	pending   map[string]*pendingSession // session ids being set up
	static    map[string]*actor.PID      // by name
	keys      map[signaling.Key]string   // WireGuard public keys in use (sessions, static peers, the exit's own)
	waiting   int                        // static peers and the subscription still to confirm in Starting
	ready     *ExitReady                 // what to announce once waiting reaches 0
	stopping  bool                       // ending or stopped: continuations start nothing
	draining  bool                       // Draining (or Ending after a drain): announced as such, sessions granted now are told
	drainEnd  time.Time                  // when the drain timeout runs out
	flows     int                        // forwarded connections open (flowsChanged from the peers)
	capacity  int                        // client sessions the address pool holds, held and free
	sweepT    *time.Timer                // next idle-session sweep; stopped in Stopping
	announceT *time.Timer                // next announcement; stopped on leaving and in Stopping
	drainT    *time.Timer                // the drain timeout; stopped on leaving and in Stopping
	moveT     *time.Timer                // the drain's move window; stopped on leaving and in Stopping
	moveOver  bool                       // the move window has passed: a drain with no flow open is over
	endT      *time.Timer                // bounds the wait for the device told endWith
	announced bool                       // an announcement went out: a leaving one follows at the end
	adm       admission                  // replay cache, rate buckets, sessions per client (exit_admission.go)
}

// NewExitProps returns the props of an exit actor.
func NewExitProps(cfg ExitConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("exit", cfg.ID)
	if cfg.Stats == nil {
		cfg.Stats = &SignalingStats{}
	}
	return props(func() actor.Actor {
		e := &exitActor{cfg: cfg, behavior: actor.NewBehavior(), used: map[netip.Addr]bool{},
			sessions: map[string]*exitSession{}, byPeer: map[string]*exitSession{}, pending: map[string]*pendingSession{},
			static: map[string]*actor.PID{}, keys: map[signaling.Key]string{}, adm: newAdmission()}
		e.behavior.Become(e.starting)
		return e
	})
}

func (e *exitActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *GetExitStatus:
		ctx.Respond(e.status())
	case *flowsChanged:
		e.flows += m.delta
		if s := e.sessions[m.sessionID]; s != nil {
			s.flows += m.delta
		}
		e.behavior.Receive(ctx) // a drain may be over
	case *GetExitSessions:
		ctx.Respond(e.sessionInfos())
	case *describeExit:
		ctx.Respond(&exitDescribed{a: e.describe()})
	case *endWith:
		e.end(ctx, m.why)
	case *actor.Stopping:
		stopTimers(e.endT, e.announceT, e.drainT, e.moveT)
		if !e.stopping {
			e.leave(ctx)
		}
		e.behavior.Become(func(actor.Context) {}) // children are stopping because we are; nothing to react to
	default:
		e.behavior.Receive(ctx)
	}
}

func (e *exitActor) starting(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		e.addr = e.cfg.Subnet.Masked().Addr().Next()
		e.used[e.addr], e.next = true, e.addr.Next()
		for _, sp := range e.cfg.StaticPeers {
			for _, a := range sp.Addresses {
				e.used[a] = true
			}
		}
		e.device = ctx.Spawn(props(newDeviceActor(deviceConfig{
			role: roleExit, owner: e.cfg.ID, privateKey: e.cfg.PrivateKey, listen: e.cfg.Listen,
			addresses: []netip.Addr{e.addr}, mtu: e.cfg.MTU, logger: e.cfg.Logger,
			conn: e.cfg.Conn, connectPort: e.cfg.ConnectPort, egress: &e.cfg.Egress,
			allowLoopback: e.cfg.Egress.AllowLoopback, udpIdle: e.cfg.UDPIdle, maxConns: e.cfg.MaxConnsPerSession,
			udpMax: e.cfg.UDPMaxDestinations,
			events: e.cfg.Events, flows: ctx.Self(), bytes: e.cfg.Bytes,
		})))
		ctx.Watch(e.device)
	case *deviceReady:
		e.endpoint = e.cfg.Endpoint
		if !e.endpoint.IsValid() {
			e.endpoint = m.endpoint
		}
		e.keys[e.cfg.PrivateKey.Public()] = "exit"
		e.ready = &ExitReady{Endpoint: e.endpoint, PublicKey: m.publicKey, Address: e.addr}
		e.waiting = len(e.cfg.StaticPeers) + 1
		for _, sp := range e.cfg.StaticPeers {
			e.keys[sp.PublicKey] = "static"
			e.addStatic(ctx, sp, func(err error) {
				if err != nil {
					e.failStart(ctx, fmt.Errorf("static peer %s: %w", sp.Name, err))
					return
				}
				e.confirmed(ctx)
			})
		}
		f := ctx.RequestFuture(e.cfg.Signaling, &serveExit{exitID: e.cfg.ID, exit: ctx.Self()}, serveExitWait)
		reenter(ctx, f, func(res any, err error) {
			if e.stopped() {
				return
			}
			if r, ok := res.(*serveExitResponse); ok {
				err = r.err
			}
			if err != nil {
				e.failStart(ctx, fmt.Errorf("subscribe %s: %w", signaling.ExitSubject(e.cfg.ID), err))
				return
			}
			e.confirmed(ctx)
		})
	case *deviceFailed:
		e.failStart(ctx, m.err)
	case *actor.Terminated:
		if m.Who.Equal(e.device) {
			e.failStart(ctx, errors.New("device stopped while starting"))
		}
	case *sessionRequested:
		ctx.Respond(&sessionGranted{err: &signaling.WireError{Code: messages.ErrCodeUnavailable, Message: "exit starting"}})
	case *sessionsPinged:
		ctx.Respond(&sessionsPong{})
	case *drainExit: // nothing to drain yet
		e.end(ctx, messages.EndEngineShutdown)
	}
}

// confirmed counts one static peer or the subscription in place; with all of them, the exit serves.
func (e *exitActor) confirmed(ctx actor.Context) {
	if e.waiting--; e.waiting > 0 || e.ready == nil {
		return
	}
	e.behavior.Become(e.serving)
	e.armSweep(ctx)
	e.capacity = max(e.status().AddressesTotal-len(e.used), 0) // the exit's own address and the static peers' are not for sessions
	e.cfg.Logger.Info("exit serving", "endpoint", e.endpoint, "address", e.addr, "public_key", e.ready.PublicKey.String())
	ctx.Send(e.cfg.ReadyTo, e.ready)
	e.announce(ctx)
}

func (e *exitActor) failStart(ctx actor.Context, err error) {
	if e.ready == nil && e.waiting < 0 {
		return
	}
	e.ready, e.waiting = nil, -1 // report once
	ctx.Send(e.cfg.ReadyTo, &ExitReady{Err: fmt.Errorf("exit %s: %w", e.cfg.ID, err)})
	e.behavior.Become(func(actor.Context) {})
	ctx.Stop(ctx.Self())
}

func (e *exitActor) serving(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *sessionRequested:
		e.grant(ctx, m.req)
	case *drainExit:
		e.drain(ctx)
	default:
		e.held(ctx)
	}
}

// held handles what Serving and Draining share: the sessions held, their pings, goodbyes and
// sweeps, the device and static peers, and the announcements' cadence.
func (e *exitActor) held(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *announceTick:
		e.announce(ctx)
	case *sessionsPinged:
		ctx.Respond(e.answerPing(m))
	case *sweepSessions:
		e.sweep(ctx)
	case *sessionClosedByClient:
		c := m.close
		if p, ok := e.pending[c.SessionID]; ok {
			if p.clientID != c.Signer {
				e.forgedGoodbye(c, "not signed by the session's client")
				return
			}
			p.gone = true // the grant completes, then the session is released at once
			return
		}
		s := e.sessions[c.SessionID]
		switch {
		case s == nil:
			e.cfg.Stats.Stale.Add(1)
			e.cfg.Logger.Debug("goodbye for a session not here", "session", c.SessionID)
			return
		case s.clientID != c.Signer:
			e.forgedGoodbye(c, "not signed by the session's client")
			return
		}
		e.cfg.Logger.Info("client said goodbye", "session", c.SessionID, "reason", c.Reason)
		ctx.Stop(s.peer)
	case *actor.Terminated:
		if m.Who.Equal(e.device) {
			e.cfg.Logger.Error("exit device stopped; exit stops")
			ctx.Stop(ctx.Self())
			return
		}
		if name, ok := e.staticByPID(m.Who); ok {
			e.staticLost(ctx, name)
			return
		}
		if s := e.byPeer[m.Who.Id]; s != nil {
			delete(e.byPeer, m.Who.Id)
			delete(e.sessions, s.id)
			e.releaseClient(s.clientID)
			delete(e.keys, s.key)
			for _, a := range s.addrs {
				delete(e.used, a)
			}
			emit(ctx, e.cfg.Events, &messages.SessionClosed{ExitID: e.cfg.ID, SessionID: s.id, Reason: "peer released"})
		}
	}
}
