package actors

// The tunnel actor owns one client tunnel: its proxy listeners and accept loops
// (tunnel_listeners.go), its legs (a session with an exit and the device that carries it:
// tunnel_leg.go), the connections proxied through it (children: tunnel_conns.go), its health
// (tunnel_health.go, tunnel_reconnect.go) and its close (tunnel_close.go).
//
//	Negotiating ──session granted──▶ Handshaking ──HandshakeCompleted──▶ Up ◀──────────────┐
//	     │                               │                               │                 │
//	     └──refused / timeout / error────┴──────▶ Failed(cause)          ├─Switch──▶ Switching ──new leg up / failed──┘
//	                                                 │                   ├─Reconfigure──▶ Reconfiguring ──new leg up──┘
//	                                                 │                   │  (old leg released first)     └─failed──▶ Failed
//	                                                 │                   ├─signaling failing ◀──▶ Degraded (traffic flows)
//	                                                 │                   ├─data plane failed / exit goodbye / session or device lost
//	                                                 │                   │     ──▶ Reconnecting ──new leg up──▶ Up   (tunnel_reconnect.go)
//	                                                 │                   └─Close──▶ Draining ──last connection ended,
//	                                                 ▼                                        or drain timeout + grace──▶ Closing
//	                                              Closed ◀──────────────(released)────────────────────────────────────┘
//
// The proxy listeners are bound synchronously in Started, so a port in use fails the open at once;
// they keep their port across switches and reconfigurations. Release order when it closes:
// listeners (Draining or Closing) → connections (told why with endWith; the tunnel stops once they
// have ended: tunnel_close.go) → goodbyes (Stopping) → devices (children; each releases netstack →
// device → UDP bind) → Closed is emitted and the opener and closers are answered (Stopped).

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
)

// TunnelConfig is a client tunnel, resolved and validated by the engine.
type TunnelConfig struct {
	ID                string
	ExitID            string
	SOCKSAddr         string        // "" disables the SOCKS5 proxy
	HTTPAddr          string        // "" disables the HTTP proxy
	UDPBind           netip.Addr    // the device's UDP address; invalid: the local address routed to the exit
	HandshakeTimeout  time.Duration // session request and first handshake together, per leg
	OpenDeadline      time.Time     // OpenTunnel's context deadline: bounds the first leg only
	DrainTimeout      time.Duration // default for Close and Switch
	Conn              ConnTimeouts  // each proxied connection's limits (Setup: its handshake and dial)
	MaxConns          int           // proxied connections at once; 0 unlimited
	MaxConnsPerSource int           // from one source address at once; 0 unlimited
	MaxHandshakes     int           // proxy connections in their handshake at once (apart from MaxConns); 0 unlimited
	ProxyOpts         proxy.Options // authentication and handshake limits of the proxies
	Keepalive         int           // WireGuard persistent keepalive, seconds
	Exits             []string      // failover exits after ExitID
	Health            HealthPolicy
	Backoff           Backoff
	ReconnectWait     time.Duration // how long a proxy connection waits for a reconnect
	Identity          *signaling.Identity
	Trust             signaling.ExitTrust // which identities may answer for this tunnel's exits
	Certificate       string              // this client's operator certificate, sent with requests
	Signaling         *actor.PID
	Events            *actor.PID
	Logger            *slog.Logger
	ReplyTo           *actor.PID // hears one messages.OpenTunnelResponse
}

type connAccepted struct {
	c      net.Conn
	kind   proxy.Kind
	parked bool // waited for a reconnect: handed over without evicting other handshakes
}

type tunnelActor struct {
	cfg         TunnelConfig
	behavior    actor.Behavior
	state       messages.TunnelState
	listeners   []*proxyListener // bound in Started, closed when draining starts or in Stopping
	legs        map[int]*leg
	nextLeg     int
	current     *leg       // the leg new connections go to; nil before Up and while reconfiguring
	pending     *leg       // the leg a Switch or Reconfigure is bringing up
	waiter      *actor.PID // the Switch or Reconfigure caller
	waitReconf  bool       // the waiter asked for Reconfigure (else Switch)
	drainFor    time.Duration
	drainT      *time.Timer
	drainWhy    messages.EndReason // recorded for connections still open when the drain ends
	info        messages.TunnelInfo
	replied     bool
	stopping    bool
	failErr     error        // why the tunnel failed; answered to the opener once released
	closers     []*actor.PID // CloseTunnel callers, answered once released
	endT        *time.Timer  // bounds the wait for connections told endWith (ending)
	nextConn    uint64
	stats       messages.ConnectionStats
	conns       map[string]connEntry // connection children by PID id
	sources     map[string]int       // active connections per source address
	refusing    int
	handshaking int    // proxy connections still in their handshake (counted in stats.Active too)
	handshakeN  uint64 // order of acceptance, to evict the oldest handshake
	evicting    int    // evicted handshakes not yet ended

	keepalive *actor.PID   // child: judges the current leg's health; alive until the tunnel stops (respawned if lost)
	respawns  int          // keepalives lost and replaced
	sigOK     bool         // signaling as last reported
	attempt   int          // reconnection attempts that failed so far
	exitBase  int          // index in exits() of the first exit to try
	released  *leg         // the old leg whose release a reconnect or reconfigure waits for
	retryT    *time.Timer  // next reconnection attempt
	parkT     *time.Timer  // next parked-connection deadline
	parked    []parkedConn // proxy connections waiting for a reconnect; owned until handed on
}

// NewTunnelProps returns the props of a tunnel actor.
func NewTunnelProps(cfg TunnelConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("tunnel", cfg.ID)
	return props(func() actor.Actor {
		t := &tunnelActor{cfg: cfg, behavior: actor.NewBehavior(), state: messages.StateNegotiating,
			legs: map[int]*leg{}, conns: map[string]connEntry{}, sources: map[string]int{}}
		t.stats.ByEnd = newByEnd()
		t.behavior.Become(t.opening)
		return t
	})
}

func (t *tunnelActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Stopping:
		t.onStopping(ctx)
	case *actor.Stopped:
		// Everything is released now: only now do the opener (on failure), the waiter and closers hear back.
		t.transition(ctx, messages.StateClosed, "released")
		err := t.failErr
		if err == nil {
			err = fmt.Errorf("%w: before it came up", ErrTunnelClosed)
		}
		t.reply(ctx, err)
		t.answerWaiter(ctx, fmt.Errorf("%w", ErrTunnelClosed))
		for _, c := range t.closers {
			ctx.Send(c, &messages.CloseTunnelResponse{})
		}
	case *messages.GetTunnelInfo:
		ctx.Respond(&messages.TunnelInfoResponse{Info: t.snapshot()})
	case *GetTunnelChildren:
		ctx.Respond(t.children())
	case *messages.GetStats:
		st := t.stats
		st.ByEnd = cloneByEnd(t.stats.ByEnd)
		ctx.Respond(&messages.StatsResponse{Stats: st})
	case *connAccepted:
		// Handled in every state: one accepted as the listener closed must not stay open in the mailbox.
		t.accept(ctx, m)
	case *messages.ConnectionEnded:
		t.ended(ctx, m)
		t.behavior.Receive(ctx) // ending waits for the last one
	case *connAdmit:
		t.admit(ctx, m)
	case *actor.Terminated:
		if t.keepalive != nil && m.Who.Equal(t.keepalive) {
			if !t.stopping {
				t.keepaliveLost(ctx)
			}
			return
		}
		t.legEvent(ctx, m)
	case *sessionReply, *deviceReady, *deviceFailed, *messages.HandshakeCompleted, *probeFailed,
		*legTimedOut, *legDrainExpired, *exitSaidGoodbye:
		t.legEvent(ctx, m)
	case *signalingHealth, *dataPlaneFailed, *sessionLost:
		t.health(ctx, m)
	case *messages.CloseTunnel:
		if ctx.Sender() != nil {
			t.closers = append(t.closers, ctx.Sender())
		}
		t.behavior.Receive(ctx)
	default:
		t.behavior.Receive(ctx)
	}
}

func (t *tunnelActor) transition(ctx actor.Context, to messages.TunnelState, cause string) {
	from := t.state
	if from == to {
		return
	}
	t.state = to
	t.cfg.Logger.Info("tunnel state", "from", from, "to", to, "cause", cause)
	emit(ctx, t.cfg.Events, &messages.TunnelStateChanged{TunnelID: t.cfg.ID, From: from, To: to, Cause: cause, At: time.Now()})
}

// opening is Negotiating and Handshaking: the first leg is coming up.
func (t *tunnelActor) opening(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		t.info = messages.TunnelInfo{ID: t.cfg.ID, ExitID: t.cfg.ExitID}
		if err := t.bindListeners(); err != nil {
			t.fail(ctx, err)
			return
		}
		t.sigOK = true
		t.spawnKeepalive(ctx)
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
		if err := signaling.ValidID(m.ExitID); err != nil {
			ctx.Respond(&messages.SwitchTunnelResponse{Err: err})
			return
		}
		t.waiter, t.waitReconf, t.drainFor = ctx.Sender(), false, t.drainTimeout(m.Drain)
		t.transition(ctx, messages.StateSwitching, "switch to "+m.ExitID)
		t.behavior.Become(t.changing)
		t.pending = t.startLeg(ctx, m.ExitID, legSwitch)
	case *messages.ReconfigureTunnel:
		t.waiter, t.waitReconf = ctx.Sender(), true
		t.transition(ctx, messages.StateReconfiguring, "reconfigure")
		t.behavior.Become(t.changing)
		old := t.current
		t.current = nil // new connections are refused until the new leg is up
		ctx.Send(t.keepalive, &stopMonitoring{})
		t.released = old // the new leg starts once this one's device has terminated (legReleased)
		t.releaseLeg(ctx, old)
	}
}

// changing is Switching and Reconfiguring: a new leg is coming up.
func (t *tunnelActor) changing(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CloseTunnel:
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
func (t *tunnelActor) closing(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.SwitchTunnel:
		ctx.Respond(&messages.SwitchTunnelResponse{Err: ErrTunnelClosed})
	case *messages.ReconfigureTunnel:
		ctx.Respond(&messages.ReconfigureTunnelResponse{Err: ErrTunnelClosed})
	}
}

// legUp is called when a leg's data plane is proven.
func (t *tunnelActor) legUp(ctx actor.Context, l *leg, rtt time.Duration) {
	switch {
	case l.purpose == legOpen && l == t.current:
		t.info.UpSince = time.Now()
		t.transition(ctx, messages.StateUp, fmt.Sprintf("handshake completed with %s, probe rtt %v", l.exitID, rtt.Round(time.Microsecond)))
		t.behavior.Become(t.up)
		t.startAccepting(ctx)
		t.watchNewLeg(ctx, l)
		t.reply(ctx, nil)
	case l == t.pending && l.purpose == legSwitch:
		old := t.current
		t.current, t.pending = l, nil
		t.info.ExitID = l.exitID
		t.transition(ctx, messages.StateUp, fmt.Sprintf("switched to %s (probe rtt %v)", l.exitID, rtt.Round(time.Microsecond)))
		t.behavior.Become(t.up)
		t.watchNewLeg(ctx, l)
		t.answerWaiter(ctx, nil)
		if old != nil && old.state == legUp {
			t.drainLeg(ctx, old, t.drainFor)
		}
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconfigure:
		t.current, t.pending = l, nil
		t.transition(ctx, messages.StateUp, fmt.Sprintf("reconfigured with %s (probe rtt %v)", l.exitID, rtt.Round(time.Microsecond)))
		t.behavior.Become(t.up)
		t.watchNewLeg(ctx, l)
		t.answerWaiter(ctx, nil)
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconnect:
		t.reconnected(ctx, l, rtt)
	default:
		t.releaseLeg(ctx, l) // no longer wanted
	}
}

// legFailed is called when a leg could not come up.
func (t *tunnelActor) legFailed(ctx actor.Context, l *leg, err error) {
	t.releaseLeg(ctx, l)
	switch {
	case l.purpose == legOpen && l == t.current:
		t.fail(ctx, err)
	case l == t.pending && l.purpose == legSwitch:
		t.pending = nil
		t.answerWaiter(ctx, err)
		if t.current == nil || t.current.state != legUp { // the old leg was lost meanwhile
			t.reconnect(ctx, "switch failed ("+err.Error()+") and the old exit was lost", false)
			return
		}
		t.transition(ctx, messages.StateUp, "switch failed, staying on "+t.current.exitID+": "+err.Error())
		t.behavior.Become(t.up)
		t.monitor(ctx, t.current) // the keepalive may have gone quiet on it during the switch
		t.restoreDegraded(ctx)
	case l == t.pending && l.purpose == legReconfigure:
		t.pending = nil
		t.answerWaiter(ctx, err)
		t.fail(ctx, err)
	case l == t.pending && l.purpose == legReconnect:
		t.reconnectFailed(ctx, err)
	}
}

// legReleased is called when a leg's device has terminated (or it never had one).
func (t *tunnelActor) legReleased(ctx actor.Context, l *leg) {
	if t.state == messages.StateReconnecting && l == t.released && !t.stopping {
		t.released = nil
		t.nextAttempt(ctx) // the old device, netstack and bind are gone: now the first attempt
		return
	}
	if l == t.released {
		t.released = nil
		if t.state == messages.StateReconfiguring && t.pending == nil && t.current == nil && !t.stopping {
			// The old device, netstack and bind are gone: only now create the new ones.
			t.pending = t.startLeg(ctx, t.info.ExitID, legReconfigure)
		}
	}
}

func (t *tunnelActor) snapshot() messages.TunnelInfo {
	info := t.info
	info.State = t.state
	if l := t.current; l != nil {
		info.SessionID, info.ExitID, info.ClientAddresses, info.ExitEndpoint = l.sessionID, l.exitID, l.addrs, l.endpoint
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
