package actors

// The tunnel actor owns one client tunnel: its proxy listeners and accept loops
// (tunnel_listeners.go), its legs (leg actors, each a session with an exit and the device that
// carries it: leg.go; what their reports mean for the tunnel: tunnel_leg.go), the connections
// proxied through it (children: tunnel_conns.go), its health (tunnel_health.go,
// tunnel_reconnect.go) and its close (tunnel_close.go). Its state is derived from its legs'
// reports, and entered only through enter (Become, event and log line together). The diagram is
// docs/state-machines.md's; its table of transitions is checked by test/transitions_test.go.
//
//	  Negotiating ──session granted──▶ Handshaking ──HandshakeCompleted──▶ Up ◀─────────────────────────────────────┐
//	   │   │                            │   │                                                                       │
//	   │   └─refused / timeout / error──┼───┴─▶ Failed(cause) ──(released)──▶ Closed                                │
//	   │   │  (StartTunnel: instead ────┼───┴─▶ Reconnecting, class "start" (below))                                │
//	   └─Close (before Up)──────────────┴─────▶ Closing ──(released)──▶ Closed                                      │
//	                                                                                                                │
//	  Up, and Degraded (which does all that Up does, and traffic flows):                                            │
//	   ├─signaling failing ◀──▶ Degraded                                                                            │
//	   ├─Switch, or the exit drains──▶ Switching ──new leg up; or new legs failed while the old one serves (stays)──┤
//	   │              ├─the old exit lost meanwhile, then the new leg failed──▶ Reconnecting                        │
//	   │              └─Close──▶ Draining (Closing if the old exit was lost meanwhile)                              │
//	   ├─Reconfigure──▶ Reconfiguring ──new leg up──────────────────────────────────────────────────────────────────┤
//	   │  (old leg released first)  ├─new leg failed──▶ Failed (StartTunnel: Reconnecting, class "other")          │
//	   │                            └─Close──▶ Closing                                                              │
//	   ├─data plane failed / exit goodbye / session or device lost──▶ Reconnecting ──new leg up─────────────────────┘
//	   │                                                               └─Close──▶ Closing
//	   └─Close──▶ Draining ──last connection ended, or drain timeout (+ grace)──▶ Closing
//
// The proxy listeners are bound synchronously in Started, so a port in use fails the open at once;
// they keep their port across switches and reconfigurations. Release order when it closes:
// listeners (Draining or Closing) → connections (told why with endWith; the tunnel stops once they
// have ended: tunnel_close.go) → legs (children; each says goodbye, then its device releases
// netstack → device → UDP bind) → Closed is emitted and the opener and closers are answered (Stopped).

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/proxy"
	"github.com/warren-tunnel/warren/signaling"
)

// Sentinel errors of tunnels.
var (
	ErrHandshakeTimeout = errors.New("tunnel setup timed out")
	ErrSessionRefused   = errors.New("exit refused the session")
	ErrExitUnreachable  = errors.New("exit unreachable over signaling")
	ErrDeviceFailed     = errors.New("tunnel device failed")
	ErrTunnelClosed     = errors.New("tunnel closed")
	ErrExitGone         = errors.New("exit ended the session")
	ErrBusy             = errors.New("tunnel is switching or reconfiguring")
	ErrNotUp            = errors.New("tunnel is not up")
	// ErrExitDraining: the exit refused the session because it drains; final for that exit (a
	// tunnel tries its next exit at once).
	ErrExitDraining = errors.New("exit is draining")
)

// TunnelConfig is a client tunnel, resolved and validated by the engine.
type TunnelConfig struct {
	ID               string
	ExitID           string
	SOCKSAddr        string        // "" disables the SOCKS5 proxy
	HTTPAddr         string        // "" disables the HTTP proxy
	UDPBind          netip.Addr    // the device's UDP address; invalid: the local address routed to the exit
	HandshakeTimeout time.Duration // session request and first handshake together, per leg
	OpenDeadline     time.Time     // OpenTunnel's context deadline: bounds the first leg only
	// KeepTrying (engine.StartTunnel): the opener is answered once the listeners are bound, which
	// accept at once (refusing until the tunnel is Up), and a first session that fails sends the
	// tunnel to Reconnecting (class "start") instead of Failed: it tries its exits with its backoff
	// until one comes up or it is closed.
	KeepTrying        bool
	DrainTimeout      time.Duration // default for Close and Switch
	Conn              ConnTimeouts  // each proxied connection's limits (Setup: its handshake and dial)
	MaxConns          int           // proxied connections at once; 0 unlimited
	MaxConnsPerSource int           // from one source address at once; 0 unlimited
	MaxHandshakes     int           // proxy connections in their handshake at once (apart from MaxConns); 0 unlimited
	UDP               UDPLimits     // SOCKS5 UDP associations
	ProxyOpts         proxy.Options // authentication and handshake limits of the proxies
	Keepalive         int           // WireGuard persistent keepalive, seconds
	Bytes             *ByteTotals   // the engine's byte totals of client connections (set by the engine actor); nil: none
	Exits             []string      // failover exits after ExitID
	// WireGuard are the WireGuard exits (ids WireGuardPrefix + name) the tunnel may use, as its
	// exit, failover exits or Switch targets; immutable maps, replaced whole by UpdateTunnel.
	WireGuard     map[string]*WireGuardExit
	Health        HealthPolicy
	Backoff       Backoff
	ReconnectWait time.Duration // how long a proxy connection waits for a reconnect
	Identity      *signaling.Identity
	Trust         signaling.ExitTrust // which identities may answer for this tunnel's exits
	Certificate   string              // this client's operator certificate, sent with requests
	Signaling     *actor.PID
	Hub           *actor.PID // the engine's health hub (health_hub.go)
	Events        *actor.PID
	// Steer, if set, steers the tunnel (a pool slot): it hears every TunnelStateChanged of the
	// tunnel and a messages.TunnelExitDraining when the current exit drains, and moves the tunnel
	// itself (SwitchTunnel). Unset, a tunnel whose exit drains moves itself to its next exit.
	Steer   *actor.PID
	Logger  *slog.Logger
	ReplyTo *actor.PID // hears one messages.OpenTunnelResponse
}

type connAccepted struct {
	c      net.Conn
	kind   proxy.Kind
	parked bool // waited for a reconnect: handed over without evicting other handshakes
}

type tunnelActor struct {
	cfg        TunnelConfig
	behavior   actor.Behavior
	state      messages.TunnelState
	listeners  []*proxyListener // bound in Started, closed when draining starts or in Stopping
	legs       map[int]*leg
	nextLeg    int
	current    *leg                // the leg new connections go to; nil before Up and while reconfiguring
	pending    *leg                // the leg a Switch or Reconfigure is bringing up
	waiter     *actor.PID          // the Switch or Reconfigure caller
	waitReconf bool                // the waiter asked for Reconfigure (else Switch)
	drainFor   time.Duration       // the drain a Switch gives the old leg
	move       []string            // a switch away from a draining exit: the exits left to try (tunnel_drain.go)
	drainT     *time.Timer         // the drain timeout of a Close; sends tunnelDrainExpired
	drainEnd   time.Time           // when drainT fires
	drainWhy   messages.EndReason  // recorded for connections still open when the drain ends
	info       messages.TunnelInfo // what GetTunnelInfo reports, besides the current leg's session
	replied    bool                // the opener (ReplyTo) was answered
	failErr    error               // why the tunnel failed; answered to the opener once released
	closers    []*actor.PID        // CloseTunnel callers, answered once released
	endT       *time.Timer         // bounds the wait for connections told endWith (closing)
	book       connBook            // the proxied connections and their counters (tunnel_conns.go)

	keepalive *actor.PID   // child: judges the current leg's health; alive until the tunnel stops (respawned if lost)
	respawns  int          // keepalives lost and replaced
	sigOK     bool         // signaling as last reported
	released  *leg         // the old leg whose release a reconnect or reconfigure waits for
	recon     reconnection // attempts, the failover order, parked connections (tunnel_reconnect.go)
}

// NewTunnelProps returns the props of a tunnel actor.
func NewTunnelProps(cfg TunnelConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("tunnel", cfg.ID)
	return props(func() actor.Actor {
		t := &tunnelActor{cfg: cfg, behavior: actor.NewBehavior(), state: messages.StateNegotiating, legs: map[int]*leg{},
			book: connBook{conns: map[string]connEntry{}, sources: map[string]int{}}}
		t.book.stats.ByEnd = newByEnd()
		t.behavior.Become(t.opening)
		return t
	})
}

func (t *tunnelActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Stopping:
		t.onStopping(ctx)
	case *actor.Stopped:
		t.onStopped(ctx)
	case *messages.GetTunnelInfo:
		ctx.Respond(&messages.TunnelInfoResponse{Info: t.snapshot()})
	case *GetTunnelChildren:
		ctx.Respond(t.children())
	case *messages.GetStats:
		ctx.Respond(&messages.StatsResponse{Stats: t.stats()})
	case *messages.GetConnections:
		ctx.Respond(&messages.ConnectionsResponse{Conns: t.connections()})
	case *UpdateTunnel:
		t.update(ctx, m)
	case *connAccepted:
		// Handled in every state: one accepted as the listener closed must not stay open in the mailbox.
		t.accept(ctx, m)
	case *messages.ConnectionEnded:
		t.ended(ctx, m)
		t.behavior.Receive(ctx) // closing waits for the last one
	case *connAdmit:
		t.admit(ctx, m)
	case *actor.Terminated:
		t.childTerminated(ctx, m.Who)
	case *legChanged:
		t.legChanged(ctx, m)
	case *legDrainExpired:
		t.legDrainExpired(ctx, m)
	case *legExitDraining:
		t.exitDrains(ctx, m)
	case *signalingHealth, *dataPlaneFailed, *sessionLost:
		t.health(ctx, m)
	case *healthHubReplaced:
		t.hubReplaced(ctx, m)
	case *messages.CloseTunnel:
		if ctx.Sender() != nil {
			t.closers = append(t.closers, ctx.Sender())
		}
		t.behavior.Receive(ctx)
	default:
		t.behavior.Receive(ctx)
	}
}

// enter is the one way into a state: the behavior that serves it, the event and the log line
// together. state names the behavior for events and snapshots; nothing else sets it.
func (t *tunnelActor) enter(ctx actor.Context, to messages.TunnelState, cause string) {
	from := t.state
	if from == to {
		return
	}
	t.state = to
	switch to {
	case messages.StateNegotiating, messages.StateHandshaking:
		t.behavior.Become(t.opening)
	case messages.StateUp, messages.StateDegraded:
		t.behavior.Become(t.up)
	case messages.StateSwitching, messages.StateReconfiguring:
		t.behavior.Become(t.changing)
	case messages.StateReconnecting:
		t.behavior.Become(t.reconnecting)
	case messages.StateDraining:
		t.behavior.Become(t.draining)
	default: // Closing, Failed, Closed
		t.behavior.Become(t.closing)
	}
	t.info.Cause = cause
	t.cfg.Logger.Info("tunnel state", "from", from, "to", to, "cause", cause)
	ev := &messages.TunnelStateChanged{TunnelID: t.cfg.ID, From: from, To: to, Cause: cause, At: time.Now()}
	if to == messages.StateReconnecting {
		ev.Reconnect = t.recon.class
	}
	if t.cfg.Events != nil {
		ctx.Request(t.cfg.Events, ev) // with the tunnel as sender: the engine frees its name on Closed
	}
	emit(ctx, t.cfg.Steer, ev)
}

// opening is Negotiating and Handshaking: the first leg is coming up.
func (t *tunnelActor) opening(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		t.info = messages.TunnelInfo{ID: t.cfg.ID, ExitID: t.cfg.ExitID, OpenedAt: time.Now()}
		if err := t.bindListeners(); err != nil {
			t.fail(ctx, err)
			return
		}
		t.sigOK = true
		t.spawnKeepalive(ctx)
		if t.cfg.KeepTrying { // the listeners are bound: StartTunnel returns
			t.startAccepting(ctx)
			t.reply(ctx, nil)
		}
		t.current = t.startLeg(ctx, t.cfg.ExitID, legOpen)
	case *messages.CloseTunnel:
		t.closeNow(ctx, reasonOr(m.Reason))
	case *messages.SwitchTunnel:
		ctx.Respond(&messages.SwitchTunnelResponse{Err: ErrNotUp})
	case *messages.ReconfigureTunnel:
		ctx.Respond(&messages.ReconfigureTunnelResponse{Err: ErrNotUp})
	}
}

func (t *tunnelActor) up(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CloseTunnel:
		t.drain(ctx, m)
	case *messages.SwitchTunnel:
		if err := t.checkExit(m.ExitID); err != nil {
			ctx.Respond(&messages.SwitchTunnelResponse{Err: err})
			return
		}
		if IsWireGuardExit(m.ExitID) && t.current != nil && t.current.exitID == m.ExitID {
			// Already there: a second leg under the same key would take the server's replies
			// from this one (Reconfigure renews the session instead).
			ctx.Respond(&messages.SwitchTunnelResponse{Info: t.snapshot()})
			return
		}
		t.waiter, t.waitReconf, t.drainFor, t.move = ctx.Sender(), false, t.drainTimeout(m.Drain), nil
		t.enter(ctx, messages.StateSwitching, "switch to "+m.ExitID)
		t.pending = t.startLeg(ctx, m.ExitID, legSwitch)
	case *messages.ReconfigureTunnel:
		t.waiter, t.waitReconf = ctx.Sender(), true
		t.enter(ctx, messages.StateReconfiguring, "reconfigure")
		old := t.current
		t.current = nil // new connections are refused until the new leg is up
		ctx.Send(t.keepalive, &stopMonitoring{})
		t.released = old // the new leg starts once this one has terminated, device and all (legReleased)
		t.releaseLeg(ctx, old)
	}
}

// changing is Switching and Reconfiguring: a new leg is coming up.
func (t *tunnelActor) changing(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CloseTunnel:
		t.move = nil
		t.answerWaiter(ctx, fmt.Errorf("%w: closed during %s", ErrTunnelClosed, t.state))
		if t.pending != nil {
			t.releaseLeg(ctx, t.pending)
			t.pending = nil
		}
		if t.current == nil {
			t.closeNow(ctx, reasonOr(m.Reason))
			return
		}
		t.drain(ctx, m)
	case *messages.SwitchTunnel:
		ctx.Respond(&messages.SwitchTunnelResponse{Err: ErrBusy})
	case *messages.ReconfigureTunnel:
		ctx.Respond(&messages.ReconfigureTunnelResponse{Err: ErrBusy})
	}
}

// closing (and failed) answers commands with ErrTunnelClosed and ignores the rest.
// While connections told endWith end, each ConnectionEnded (counted already by ended) may be the
// last; the tunnel stops then, or when childrenEndWait has passed.
func (t *tunnelActor) closing(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.SwitchTunnel:
		ctx.Respond(&messages.SwitchTunnelResponse{Err: ErrTunnelClosed})
	case *messages.ReconfigureTunnel:
		ctx.Respond(&messages.ReconfigureTunnelResponse{Err: ErrTunnelClosed})
	case *messages.ConnectionEnded:
		t.checkEnded(ctx, false)
	case *childrenEndExpired:
		t.checkEnded(ctx, true)
	}
}

func (t *tunnelActor) snapshot() messages.TunnelInfo {
	info := t.info
	info.State = t.state
	info.Exits = t.exits()
	if l := t.current; l != nil {
		info.SessionID, info.ExitID, info.ClientAddresses, info.ExitEndpoint = l.sessionID, l.exitID, l.addrs, l.endpoint
		if l.handshake != nil {
			info.LastHandshake = l.handshake() // one atomic read of the device: no lock, no wait
		}
	}
	return info
}

func (t *tunnelActor) reply(ctx actor.Context, err error) {
	if t.replied || t.cfg.ReplyTo == nil {
		return
	}
	t.replied = true
	ctx.Send(t.cfg.ReplyTo, &messages.OpenTunnelResponse{Info: t.snapshot(), Err: err})
}

func (t *tunnelActor) answerWaiter(ctx actor.Context, err error) {
	if t.waiter == nil {
		return
	}
	w := t.waiter
	t.waiter = nil
	if t.waitReconf {
		ctx.Send(w, &messages.ReconfigureTunnelResponse{Info: t.snapshot(), Err: err})
		return
	}
	ctx.Send(w, &messages.SwitchTunnelResponse{Info: t.snapshot(), Err: err})
}
