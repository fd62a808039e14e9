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
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
}

// sendExitGoodbye publishes an exit's goodbye to a client; fire and forget.
type sendExitGoodbye struct {
	clientID string
	close    *messages.SessionClose
}

// watchSession routes the exit's goodbye for a session to the sender (a tunnel), once verified
// against the exit's identity; unwatchSession stops that.
type watchSession struct {
	sessionID    string
	exitIdentity string
	tunnel       *actor.PID
}

type unwatchSession struct{ sessionID string }

// exitSaidGoodbye tells a tunnel that the exit ended one of its sessions.
type exitSaidGoodbye struct {
	sessionID string
	reason    string
}

type inboundClientEvent struct{ msg *nats.Msg }

// pingExit asks an exit whether it still holds a session; the requester hears one *pingReply.
type pingExit struct {
	exitID, sessionID string
	timeout           time.Duration
}

type pingReply struct {
	known bool
	err   error
}

// sessionPinged asks the exit actor whether it holds a session; it replies *sessionPong.
type sessionPinged struct{ sessionID string }

type sessionPong struct{ known bool }

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

type watchedSession struct {
	tunnel       *actor.PID
	exitIdentity string
}

// requestSession asks an exit for a session; the requester hears one *sessionReply.
type requestSession struct {
	exitID  string
	req     *messages.SessionRequest
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

// sessionRequested is a validated session request for the exit actor; it replies *sessionGranted.
type sessionRequested struct{ req *messages.SessionRequest }

// sessionGranted answers sessionRequested: a response, or a refusal with its wire code.
type sessionGranted struct {
	resp *messages.SessionResponse
	err  *signaling.WireError
}

// sessionClosedByClient is a validated goodbye for the exit actor.
type sessionClosedByClient struct{ close *messages.SessionClose }

type inboundRPC struct {
	msg  *nats.Msg
	exit *actor.PID
}

// maxInFlight bounds session requests waiting for their exit's answer; more are refused with
// "unavailable" instead of piling up in the mailbox.
const maxInFlight = 256

type signalingActor struct {
	cfg      SignalingConfig
	inFlight int
	watched  map[string]watchedSession // session id → the tunnel to tell of the exit's goodbye
	natsUp   NATSState
	natsSubs map[string]*actor.PID // watchers of NATSState, by PID id
	subs     []*nats.Subscription
	ctx      context.Context // cancelled in Stopping; ends outstanding requests
	cancel   context.CancelFunc
	wg       sync.WaitGroup // outstanding request goroutines
}

// NewSignalingProps returns the props of the signaling actor.
func NewSignalingProps(cfg SignalingConfig) *actor.Props {
	cfg.Logger = orDiscard(cfg.Logger).With("actor", "signaling")
	return props(func() actor.Actor { return &signalingActor{cfg: cfg} })
}

func (s *signalingActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.watched = map[string]watchedSession{}
		s.natsSubs = map[string]*actor.PID{}
		s.natsUp = NATSState{Connected: s.cfg.Conn.IsConnected(), URL: s.cfg.Conn.ConnectedUrlRedacted()}
		if s.cfg.ClientID != "" {
			system, self := ctx.ActorSystem(), ctx.Self()
			sub, err := s.cfg.Conn.Subscribe(signaling.ClientSubject(s.cfg.ClientID), func(msg *nats.Msg) {
				system.Root.Send(self, &inboundClientEvent{msg: msg})
			})
			if err != nil {
				s.cfg.Logger.Error("subscribe to client events", "err", err)
			} else {
				s.subs = append(s.subs, sub)
			}
		}
	case *NATSState:
		if m.Connected != s.natsUp.Connected {
			lvl := slog.LevelWarn
			if m.Connected {
				lvl = slog.LevelInfo
			}
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
	case *pingExit:
		s.ping(ctx, m)
	case *DropConnection:
		s.cfg.Conn.Close()
		ctx.Respond(&DropConnectionResponse{})
	case *watchSession:
		s.watched[m.sessionID] = watchedSession{tunnel: m.tunnel, exitIdentity: m.exitIdentity}
	case *unwatchSession:
		delete(s.watched, m.sessionID)
	case *inboundClientEvent:
		s.handleClientEvent(ctx, m.msg)
	case *sendExitGoodbye:
		data, err := signaling.Encode(messages.TypeSessionClose, m.close)
		if err == nil {
			err = s.cfg.Conn.Publish(signaling.ClientSubject(m.clientID), data)
		}
		if err != nil {
			s.cfg.Logger.Warn("exit goodbye not sent", "client", m.clientID, "session", m.close.SessionID, "err", err)
		}
	case *serveExit:
		system, self, exit := ctx.ActorSystem(), ctx.Self(), m.exit
		sub, err := s.cfg.Conn.Subscribe(signaling.ExitSubject(m.exitID), func(msg *nats.Msg) {
			system.Root.Send(self, &inboundRPC{msg: msg, exit: exit})
		})
		if err == nil {
			_ = sub.SetPendingLimits(4096, 8<<20)
			s.subs = append(s.subs, sub)
		}
		ctx.Respond(&serveExitResponse{err: err})
	case *inboundRPC:
		s.handleRPC(ctx, m)
	case *requestSession:
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
		s.cancel()
		s.wg.Wait()
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		_ = s.cfg.Conn.FlushTimeout(time.Second) // deliver goodbyes already published
		s.cfg.Conn.Close()
		if s.cfg.Server != nil {
			s.cfg.Server.Shutdown()
			s.cfg.Server.WaitForShutdown()
		}
	}
}

// handleClientEvent takes an exit's goodbye: valid, for a watched session, signed by that session's exit.
func (s *signalingActor) handleClientEvent(ctx actor.Context, msg *nats.Msg) {
	body, err := signaling.Decode(msg.Data)
	if err != nil {
		s.cfg.Logger.Warn("client event refused", "subject", msg.Subject, "reason", err)
		return
	}
	c, ok := body.(*messages.SessionClose)
	if !ok {
		s.cfg.Logger.Warn("client event refused", "subject", msg.Subject, "reason", fmt.Sprintf("unexpected %T", body))
		return
	}
	w, ok := s.watched[c.SessionID]
	if !ok {
		s.cfg.Logger.Debug("exit goodbye for unknown session", "session", c.SessionID)
		return
	}
	if c.Signer != w.exitIdentity {
		s.cfg.Logger.Warn("exit goodbye refused", "session", c.SessionID, "reason", "not signed by the session's exit")
		return
	}
	if err := signaling.VerifySessionClose(c, time.Now()); err != nil {
		s.cfg.Logger.Warn("exit goodbye refused", "session", c.SessionID, "reason", err)
		return
	}
	delete(s.watched, c.SessionID)
	ctx.Send(w.tunnel, &exitSaidGoodbye{sessionID: c.SessionID, reason: c.Reason})
}

func (s *signalingActor) refuse(msg *nats.Msg, code, text string) {
	s.cfg.Logger.Warn("signaling message refused", "subject", msg.Subject, "code", code, "reason", text, "bytes", len(msg.Data))
	if msg.Reply == "" {
		return
	}
	_ = msg.Respond(signaling.EncodeError(code, text))
}

func (s *signalingActor) handleRPC(ctx actor.Context, m *inboundRPC) {
	body, err := signaling.Decode(m.msg.Data)
	if err != nil {
		var we *signaling.WireError
		if errors.As(err, &we) {
			s.refuse(m.msg, we.Code, we.Message)
		} else {
			s.refuse(m.msg, messages.ErrCodeBadRequest, err.Error())
		}
		return
	}
	switch b := body.(type) {
	case *messages.SessionRequest:
		if m.msg.Reply == "" {
			s.refuse(m.msg, messages.ErrCodeBadRequest, "session request without a reply subject")
			return
		}
		if s.inFlight >= maxInFlight {
			s.refuse(m.msg, messages.ErrCodeUnavailable, "too many session requests in flight")
			return
		}
		s.inFlight++
		msg := m.msg
		f := ctx.RequestFuture(m.exit, &sessionRequested{req: b}, 5*time.Second)
		ctx.ReenterAfter(f, func(res any, err error) {
			s.inFlight--
			g, ok := res.(*sessionGranted)
			switch {
			case err != nil || !ok:
				s.refuse(msg, messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err))
			case g.err != nil:
				s.refuse(msg, g.err.Code, g.err.Message)
			default:
				data, err := signaling.Encode(messages.TypeSessionResponse, g.resp)
				if err != nil {
					s.refuse(msg, messages.ErrCodeInternal, err.Error())
					return
				}
				_ = msg.Respond(data)
			}
		})
	case *messages.SessionClose:
		ctx.Send(m.exit, &sessionClosedByClient{close: b})
	case *messages.SessionPing:
		if m.msg.Reply == "" {
			return
		}
		msg, id := m.msg, b.SessionID
		f := ctx.RequestFuture(m.exit, &sessionPinged{sessionID: id}, 2*time.Second)
		ctx.ReenterAfter(f, func(res any, err error) {
			p, ok := res.(*sessionPong)
			if err != nil || !ok {
				s.refuse(msg, messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err))
				return
			}
			if data, err := signaling.Encode(messages.TypeSessionPong, &messages.SessionPong{SessionID: id, Known: p.known}); err == nil {
				_ = msg.Respond(data)
			}
		})
	default:
		s.refuse(m.msg, messages.ErrCodeUnknownType, fmt.Sprintf("%T is not a request", body))
	}
}

// request runs one NATS request in a goroutine the actor owns (cancelled and awaited in Stopping)
// and sends the outcome straight to the requester.
func (s *signalingActor) request(ctx actor.Context, m *requestSession) {
	data, err := signaling.Encode(messages.TypeSessionRequest, m.req)
	requester, system := ctx.Sender(), ctx.ActorSystem()
	if err != nil {
		ctx.Send(requester, &sessionReply{tag: m.tag, err: err})
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		rctx, cancel := context.WithTimeout(s.ctx, m.timeout)
		defer cancel()
		reply := &sessionReply{tag: m.tag}
		msg, err := s.cfg.Conn.RequestWithContext(rctx, signaling.ExitSubject(m.exitID), data)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			reply.err = fmt.Errorf("%w: no exit %q is serving", ErrExitUnreachable, m.exitID)
		case err != nil:
			reply.err = fmt.Errorf("%w: exit %q: %w", ErrExitUnreachable, m.exitID, err)
		default:
			reply.resp, reply.err = decodeSessionReply(msg.Data, m.req.SessionID)
		}
		system.Root.Send(requester, reply)
	}()
}

// ping runs one session ping in a goroutine the actor owns and answers the requester directly.
func (s *signalingActor) ping(ctx actor.Context, m *pingExit) {
	requester, system := ctx.Sender(), ctx.ActorSystem()
	data, err := signaling.Encode(messages.TypeSessionPing, &messages.SessionPing{SessionID: m.sessionID})
	if err != nil || !s.cfg.Conn.IsConnected() {
		if err == nil {
			err = fmt.Errorf("%w: not connected", signaling.ErrNATSUnavailable)
		}
		ctx.Send(requester, &pingReply{err: err})
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		rctx, cancel := context.WithTimeout(s.ctx, m.timeout)
		defer cancel()
		reply := &pingReply{}
		msg, err := s.cfg.Conn.RequestWithContext(rctx, signaling.ExitSubject(m.exitID), data)
		if err != nil {
			reply.err = fmt.Errorf("ping exit %q: %w", m.exitID, err)
		} else if body, err := signaling.Decode(msg.Data); err != nil {
			reply.err = fmt.Errorf("ping exit %q: %w", m.exitID, err)
		} else if p, ok := body.(*messages.SessionPong); ok && p.SessionID == m.sessionID {
			reply.known = p.Known
		} else {
			reply.err = fmt.Errorf("ping exit %q: unexpected reply %T", m.exitID, body)
		}
		system.Root.Send(requester, reply)
	}()
}

func decodeSessionReply(data []byte, sessionID string) (*messages.SessionResponse, error) {
	body, err := signaling.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed reply: %w", ErrSessionRefused, err)
	}
	switch b := body.(type) {
	case *messages.SessionResponse:
		if b.SessionID != sessionID {
			return nil, fmt.Errorf("%w: reply for another session", ErrSessionRefused)
		}
		return b, nil
	case *messages.ErrorResponse:
		return nil, fmt.Errorf("%w: %w", ErrSessionRefused, &signaling.WireError{Code: b.Code, Message: b.Message})
	}
	return nil, fmt.Errorf("%w: unexpected reply %T", ErrSessionRefused, body)
}
