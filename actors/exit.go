package actors

// The exit actor owns an exit's identity, its address pool and its session table. Its device (a
// child) runs one WireGuard device for every client; each session or static peer is a peer actor
// under the device, and each forwarded flow a connection actor under its peer.
//
//	Starting ──device ready, static peers added, subscribed──▶ Serving ──endWith(why)──▶ Ending
//	   │                                                          └──device lost──▶ stop
//	   └──device, a static peer or the subscription failed──▶ ExitReady{Err} to ReadyTo, stop
//	Ending: goodbye to every client session, then endWith(why) to the device (which ends its peers,
//	        which end their connections) ──device terminated, or childrenEndWait (5 s; warning)──▶ stop
//	Stopping (unless it was Ending): the same goodbyes; its children stop with it.
//
// The engine ends the exit with endWith(engine_shutdown), so that its connections record why; the
// goodbyes go out first, before the engine stops signaling. Stopped from outside (it failed to
// start, its device stopped, the actor system shut down), it says the same goodbyes in Stopping and
// its children are stopped with it: their connections end with their default, tunnel_closed.
//
// A session request arrives verified (signature, clock: the signaling actor), is admitted (allowed
// clients, replay, limits: exit_admission.go) and given addresses,
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
	// SessionIdle releases a session whose client sent nothing for this long (it died without a
	// goodbye: live tunnels send keepalives and health probes). 0: never.
	SessionIdle time.Duration
	Signaling   *actor.PID
	Events      *actor.PID
	Logger      *slog.Logger
	ReadyTo     *actor.PID          // hears one *ExitReady
	Stats       *SignalingStats     // goodbyes dropped; nil: not kept
	Identity    *signaling.Identity // signs the exit's goodbyes; announced in session responses
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
}

// pendingSession is a session being set up: whose it is, and whether its client already said goodbye.
type pendingSession struct {
	clientID string
	gone     bool
}

type exitActor struct {
	cfg      ExitConfig
	behavior actor.Behavior
	addr     netip.Addr // the exit's own tunnel address
	device   *actor.PID
	endpoint netip.AddrPort
	used     map[netip.Addr]bool
	next     netip.Addr
	sessions map[string]*exitSession    // by session id
	byPeer   map[string]*exitSession    // by peer PID id
	pending  map[string]*pendingSession // session ids being set up
	static   map[string]*actor.PID      // by name
	keys     map[signaling.Key]string   // WireGuard public keys in use (sessions, static peers, the exit's own)
	waiting  int                        // static peers and the subscription still to confirm in Starting
	ready    *ExitReady                 // what to announce once waiting reaches 0
	stopping bool                       // ending or stopped: continuations start nothing
	sweepT   *time.Timer                // next idle-session sweep; stopped in Stopping
	endT     *time.Timer                // bounds the wait for the device told endWith
	adm      admission                  // replay cache, rate buckets, sessions per client (exit_admission.go)
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
	case *endWith:
		if e.stopping {
			return
		}
		e.leave(ctx)
		e.endT = endChildren(ctx, m.why, ctx.Children()) // the device
		e.behavior.Become(e.ending)
		stopWhenEnded(ctx, e.cfg.Logger, len(ctx.Children()), false)
	case *actor.Stopping:
		stopTimers(e.endT)
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
			events: e.cfg.Events,
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
	}
}

// confirmed counts one static peer or the subscription in place; with all of them, the exit serves.
func (e *exitActor) confirmed(ctx actor.Context) {
	if e.waiting--; e.waiting > 0 || e.ready == nil {
		return
	}
	e.behavior.Become(e.serving)
	e.armSweep(ctx)
	e.cfg.Logger.Info("exit serving", "endpoint", e.endpoint, "address", e.addr, "public_key", e.ready.PublicKey.String())
	ctx.Send(e.cfg.ReadyTo, e.ready)
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

func (e *exitActor) grant(ctx actor.Context, req *messages.SessionRequest) {
	refuse := func(code, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		e.cfg.Logger.Warn("session refused", "session", req.SessionID, "client", req.ClientID, "code", code, "reason", msg)
		ctx.Respond(&sessionGranted{err: &signaling.WireError{Code: code, Message: msg}})
	}
	if req.ExitID != e.cfg.ID {
		refuse(messages.ErrCodeBadRequest, "request for exit %q reached exit %q", req.ExitID, e.cfg.ID)
		return
	}
	now := time.Now()
	if e.pending[req.SessionID] != nil {
		refuse(messages.ErrCodeReplayed, "request already seen")
		return
	}
	if code, text := e.admitRequest(req, now); code != "" {
		refuse(code, "%s", text)
		return
	}
	key, _ := signaling.ParseKey(req.WGPublicKey) // validated by the codec
	if _, used := e.keys[key]; used {
		// wireguard-go would update the existing peer (and take its address): refuse instead.
		e.releaseClient(req.ClientID)
		refuse(messages.ErrCodeBadRequest, "wireguard key in use")
		return
	}
	addr, err := e.allocate()
	if err != nil {
		e.releaseClient(req.ClientID)
		refuse(messages.ErrCodeExhausted, "%v", err)
		return
	}
	e.pending[req.SessionID] = &pendingSession{clientID: req.ClientID}
	e.keys[key] = req.SessionID
	f := ctx.RequestFuture(e.device, &addPeer{
		publicKey: key, allowedIPs: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}, sessionID: req.SessionID,
		goodbye: true,
	}, addPeerWait)
	reenter(ctx, f, func(res any, err error) {
		goneAlready := e.pending[req.SessionID].gone
		delete(e.pending, req.SessionID)
		if e.stopped() { // the exit is stopping: its goodbyes went out already; this session never starts
			if r, ok := res.(*addPeerResponse); ok && r.err == nil {
				ctx.Stop(r.pid)
			}
			err = errors.New("exit shutting down")
			res = nil
		}
		if r, ok := res.(*addPeerResponse); ok {
			err = r.err
			if err == nil {
				s := &exitSession{id: req.SessionID, clientID: req.ClientID, key: key, peer: r.pid, addrs: []netip.Addr{addr},
					lastRx: -1, lastActive: time.Now()}
				e.sessions[s.id], e.byPeer[r.pid.Id] = s, s
				ctx.Watch(r.pid)
				resp := &messages.SessionResponse{
					SessionID: req.SessionID, ExitWGPublicKey: e.cfg.PrivateKey.Public().String(),
					Endpoint: e.endpoint.String(), ClientAddresses: []string{addr.String()},
					ExitAddresses: []string{e.addr.String()}, ConnectPort: e.cfg.ConnectPort, MTU: e.cfg.MTU,
					ExitID: e.cfg.ID, ClientID: req.ClientID, Certificate: e.cfg.Certificate,
				}
				e.cfg.Identity.SignSessionResponse(resp, time.Now())
				ctx.Respond(&sessionGranted{resp: resp})
				e.cfg.Logger.Info("session opened", "session", s.id, "client", s.clientID, "address", addr)
				emit(ctx, e.cfg.Events, &messages.SessionOpened{ExitID: e.cfg.ID, SessionID: s.id, ClientID: s.clientID, ClientAddresses: s.addrs})
				if goneAlready {
					e.cfg.Logger.Info("client said goodbye during setup", "session", s.id)
					ctx.Stop(r.pid)
				}
				return
			}
		}
		delete(e.used, addr)
		delete(e.keys, key)
		e.releaseClient(req.ClientID)
		if e.stopped() {
			refuse(messages.ErrCodeUnavailable, "%v", err)
			return
		}
		refuse(messages.ErrCodeInternal, "add peer: %v", err)
	})
}
