package actors

// The signaling actor is the bridge between actors and NATS. It owns the NATS connection, every
// subscription, the goroutines of outstanding requests, and the embedded NATS server when the
// engine runs one. Incoming messages are decoded and validated here before any actor sees them; a
// malformed, oversized or unknown message is answered with an error (or dropped when it has no
// reply subject), logged with the reason, and changes no state.
//
//	Started ──▶ serving ──Stopping──▶ cancel requests, wait; unsubscribe; close connection; shut server down

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// SignalingConfig hands the actor its resources; it owns them from then on.
type SignalingConfig struct {
	Conn     *nats.Conn
	Server   *server.Server // embedded server, or nil
	Logger   *slog.Logger
	ClientID string // this engine's identity: exits' goodbyes arrive on its events subject
	// Identity signs this engine's pings (as a client) and its refusals and pongs (as an exit).
	Identity *signaling.Identity
	Stats    *SignalingStats // counted by the actor and its request goroutines; nil: not kept
	// ExitCertificate is this engine's exit certificate, presented with its signed refusals.
	ExitCertificate string
}

// sendExitGoodbye publishes an exit's goodbye to a client; fire and forget.
type sendExitGoodbye struct {
	clientID string
	close    *messages.SessionClose
}

// watchSession routes the exit's goodbye for a session to the sender (a leg), once verified against
// the exit's identity; unwatchSession stops that. A session is watched from its request on
// (requestSession), so that a goodbye overtaking the grant is held rather than lost.
type watchSession struct {
	sessionID    string
	exitIdentity string
	tunnel       *actor.PID // the leg that watches the session
}

type unwatchSession struct{ sessionID string }

// exitSaidGoodbye tells a leg that the exit ended its session.
type exitSaidGoodbye struct {
	sessionID string
	reason    string
}

// exitDraining tells a leg that the exit of its session drains: it ends the session's flows within
// drain (messages.SessionDraining, verified).
type exitDraining struct {
	sessionID string
	drain     time.Duration
}

type inboundClientEvent struct{ msg *nats.Msg }

// pingSessions asks an exit which of this client's sessions (at most messages.MaxPingSessions) it
// still holds; the requester hears one *pingReply carrying this request. Only a pong signed by
// exitIdentity (the sessions' exit, trusted when they were granted) counts.
type pingSessions struct {
	exitID, exitIdentity string
	sessionIDs           []string
	timeout              time.Duration
}

type pingReply struct {
	req   *pingSessions
	known map[string]bool // the asked sessions the exit holds (nil with err)
	err   error
}

// sessionsPinged asks the exit actor which of sessionIDs it holds for the client that signed the
// ping at ts; it replies *sessionsPong.
type sessionsPinged struct {
	sessionIDs []string
	clientID   string
	ts         int64
}

type sessionsPong struct {
	known []string
	err   *signaling.WireError // the ping is refused: replayed
}

// DropConnection closes the NATS connection at once, without flushing: nothing more is published
// (Engine.Kill). The reply is *DropConnectionResponse.
type DropConnection struct{}

// DropConnectionResponse answers DropConnection.
type DropConnectionResponse struct{}

// NATSState is a change of the NATS connection's state, as the engine hears it from nats.go.
type NATSState struct {
	Connected bool
	URL       string
	Err       error
}

// watchNATS subscribes pid to NATSState changes (the current state is sent at once); unwatchNATS ends it.
type watchNATS struct{ pid *actor.PID }
type unwatchNATS struct{ pid *actor.PID }

// watchedSession: a session requested (exitIdentity still "") or granted by the exit with that
// identity. A goodbye that arrives between the request and the grant (the exit shut down just after
// granting) is held in early, verified, until the grant says who may sign it: one per signer, at most
// maxEarlyGoodbyes, so that goodbyes signed by others (anyone on the bus may read a session id) cannot
// crowd out the exit's own.
type watchedSession struct {
	tunnel       *actor.PID // the leg that asked for the session
	exitIdentity string
	early        []*messages.SessionClose
	earlyDrain   []*messages.SessionDraining // drain notices held the same way
}

// requestSession asks an exit for a session; the requester hears one *sessionReply. Only an answer
// signed by an identity that trust accepts for exitID counts.
type requestSession struct {
	exitID  string
	req     *messages.SessionRequest
	trust   signaling.ExitTrust
	timeout time.Duration
	tag     int // returned in the reply
}

type sessionReply struct {
	tag  int
	resp *messages.SessionResponse
	err  error
}

// sendGoodbye publishes a session close to an exit; fire and forget.
type sendGoodbye struct {
	exitID string
	close  *messages.SessionClose
}

// serveExit subscribes to an exit's RPC subject and routes valid requests to exit; reply serveExitResponse.
type serveExit struct {
	exitID string
	exit   *actor.PID
}

type serveExitResponse struct{ err error }

// sessionRequested is a validated session request whose signature and clock the signaling actor
// has verified, for the exit actor; it replies *sessionGranted.
type sessionRequested struct{ req *messages.SessionRequest }

// sessionGranted answers sessionRequested: a response, or a refusal with its wire code.
type sessionGranted struct {
	resp *messages.SessionResponse
	err  *signaling.WireError
}

// sessionClosedByClient is a goodbye whose signature and clock the signaling actor has verified.
type sessionClosedByClient struct{ close *messages.SessionClose }

type inboundRPC struct {
	msg    *nats.Msg
	exit   *actor.PID
	exitID string
}

type signalingActor struct {
	cfg      SignalingConfig
	inFlight int             // session requests the exit actor is answering
	queue    []queuedRequest // session requests waiting their turn (signaling_exit.go)
	// backlog counts exit requests handed to the mailbox and not yet handled: flow control between
	// the NATS callback and the actor (not lifecycle state).
	backlog   atomic.Int64
	watched   map[string]watchedSession // session id → the leg to tell of the exit's goodbye
	unwatched recentSessions            // sessions no longer watched lately: a goodbye for one crossed ours
	natsUp    NATSState
	natsLookT *time.Timer // started disconnected: sends natsLook once; stopped in Stopping
	// natsLogged is the NATS error last logged (natsLook logs what nats.go saw only if it is news)
	natsLogged string
	natsSubs   map[string]*actor.PID // watchers of NATSState, by PID id
	subs       []*nats.Subscription
	clientSub  *nats.Subscription // this engine's client subject; from the first watched session on
	dir        directorySignaling // announcements and discovery rounds for the exit directory (signaling_directory.go)
	// announcer is this engine's exit while it announces (signaling_announce.go): it answers
	// discovery, on discoverSub (from its first announcement on).
	announcer   *actor.PID
	discoverSub *nats.Subscription
	ctx         context.Context // cancelled in Stopping; ends outstanding requests
	cancel      context.CancelFunc
	wg          sync.WaitGroup // outstanding request goroutines
}

// NewSignalingProps returns the props of the signaling actor.
func NewSignalingProps(cfg SignalingConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("actor", "signaling")
	if cfg.Stats == nil {
		cfg.Stats = &SignalingStats{}
	}
	return props(func() actor.Actor { return &signalingActor{cfg: cfg} })
}

func (s *signalingActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.watched = map[string]watchedSession{}
		s.natsSubs = map[string]*actor.PID{}
		s.natsUp = NATSState{Connected: s.cfg.Conn.IsConnected(), URL: s.cfg.Conn.ConnectedUrlRedacted()}
		if !s.natsUp.Connected { // nats.wait_on_start: started without a server, trying in the background
			s.natsUp.Err = s.cfg.Conn.LastError()
			s.natsLogged = errText(s.natsUp.Err)
			s.cfg.Logger.Warn("nats connection", "connected", false, "err", s.natsUp.Err, "retrying", "in the background")
			// nats.go reports no failed login while it retries: look once more what it last saw.
			s.natsLookT = sendAfter(ctx, natsStartLook, &natsLook{})
		}
	case *natsLook:
		err := s.cfg.Conn.LastError() // a refused login is only here
		if err == nil {
			err = s.natsUp.Err // a failed dial, as its report said
		}
		if !s.natsUp.Connected && err != nil && errText(err) != s.natsLogged {
			s.natsLogged = errText(err)
			s.cfg.Logger.Warn("nats connection", "connected", false, "err", err, "retrying", "in the background")
		}

	case *NATSState:
		// Logged when it connects or disconnects; not at every failed attempt while disconnected
		// (every 250 ms, alternating between servers): NATSStatus has the last error.
		if m.Connected != s.natsUp.Connected {
			lvl := slog.LevelWarn
			if m.Connected {
				lvl = slog.LevelInfo
			}
			s.natsLogged = errText(m.Err)
			s.cfg.Logger.Log(context.Background(), lvl, "nats connection", "connected", m.Connected, "url", m.URL, "err", m.Err)
		}
		s.natsUp = *m
		for _, pid := range s.natsSubs {
			ctx.Send(pid, m)
		}
	case *watchNATS:
		s.natsSubs[m.pid.Id] = m.pid
		st := s.natsUp
		ctx.Send(m.pid, &st)
	case *unwatchNATS:
		delete(s.natsSubs, m.pid.Id)
	case *pingSessions:
		s.ping(ctx, m)
	case *DropConnection:
		s.cfg.Conn.Close()
		ctx.Respond(&DropConnectionResponse{})
	case *watchSession:
		s.watch(ctx, m)
	case *unwatchSession:
		s.unwatch(m.sessionID)
	case *inboundClientEvent:
		s.backlog.Add(-1)
		s.handleClientEvent(ctx, m.msg)
	case *sendExitGoodbye:
		data, err := signaling.Encode(messages.TypeSessionClose, m.close)
		if err == nil {
			err = s.cfg.Conn.Publish(signaling.ClientSubject(m.clientID), data)
		}
		if err != nil {
			s.cfg.Logger.Warn("exit goodbye not sent", "client", m.clientID, "session", m.close.SessionID, "err", err)
		}
	case *announce:
		s.announce(ctx, m)
	case *inboundDiscover:
		s.backlog.Add(-1)
		s.discovered(ctx, m.msg)
	case *sendSessionDraining:
		s.sendDraining(m)
	case *serveExit:
		exit, exitID := m.exit, m.exitID
		sub, err := s.subscribeBounded(ctx, signaling.ExitSubject(m.exitID), func(msg *nats.Msg) any {
			return &inboundRPC{msg: msg, exit: exit, exitID: exitID}
		})
		if err == nil {
			s.subs = append(s.subs, sub)
		}
		ctx.Respond(&serveExitResponse{err: err})
	case *inboundRPC:
		s.backlog.Add(-1)
		s.handleRPC(ctx, m)
	case directorySignal:
		s.directorySignal(ctx, m)
	case *requestSession:
		s.subscribeClientEvents(ctx)
		if ctx.Sender() != nil {
			s.watched[m.req.SessionID] = watchedSession{tunnel: ctx.Sender()} // granted: watchSession
		}
		s.request(ctx, m)
	case *sendGoodbye:
		data, err := signaling.Encode(messages.TypeSessionClose, m.close)
		if err == nil {
			err = s.cfg.Conn.Publish(signaling.ExitSubject(m.exitID), data)
		}
		if err != nil {
			s.cfg.Logger.Warn("goodbye not sent", "exit", m.exitID, "session", m.close.SessionID, "err", err)
		}
	case *actor.Stopping:
		if s.natsLookT != nil {
			s.natsLookT.Stop()
		}
		for _, q := range s.queue { // they would only time out: say so now (flushed below)
			s.refuseRequest(q, messages.ErrCodeUnavailable, "exit shutting down")
		}
		s.queue = nil
		s.cancel()
		s.wg.Wait()
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		_ = s.cfg.Conn.FlushTimeout(goodbyeFlushWait) // deliver goodbyes already published
		s.cfg.Conn.Close()
		if s.cfg.Server != nil {
			s.cfg.Server.Shutdown()
			s.cfg.Server.WaitForShutdown()
		}
	}
}

// subscribeBounded subscribes to subject and hands each message, wrapped, to the actor (unless wrap
// returns nil: it dropped the message, and counted it). The mailbox
// is unbounded, so what waits in it is bounded here: past maxBacklog messages (for all of this
// actor's subscriptions together) the rest are dropped and counted, and a flood on a subject —
// anyone on the bus may publish to it — costs bounded memory. The actor decrements backlog as it
// takes each one.
func (s *signalingActor) subscribeBounded(ctx actor.Context, subject string, wrap func(*nats.Msg) any) (*nats.Subscription, error) {
	system, self, backlog, stats := ctx.ActorSystem(), ctx.Self(), &s.backlog, s.cfg.Stats
	sub, err := s.cfg.Conn.Subscribe(subject, func(msg *nats.Msg) {
		m := wrap(msg)
		if m == nil { // the wrapper dropped it, and counted it
			return
		}
		if backlog.Add(1) > maxBacklog {
			backlog.Add(-1)
			stats.Dropped.Add(1)
			return
		}
		system.Root.Send(self, m)
	})
	if err == nil {
		_ = sub.SetPendingLimits(maxBacklog, 8<<20)
	}
	return sub, err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// natsLook: look at the NATS connection's last error once, natsStartLook after a start without a
// server (a refused login is reported by nothing else while nats.go retries).
type natsLook struct{}
