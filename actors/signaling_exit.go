package actors

// The exit half of the signaling actor: requests that reach an exit's RPC subject. Each is decoded
// and validated before the exit actor sees it; every refusal of a request that could be read is
// signed by this engine's identity and bound to the request's session and client, so a client can
// tell the exit's refusal from a forgery. Session requests beyond maxInFlight wait in a bounded
// queue (queueWait at most) instead of being refused at once: a burst of clients all get sessions.

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// Session requests: at most maxInFlight wait for the exit actor's answer; up to maxQueued more wait
// their turn for at most queueWait, then are refused "unavailable" (clients retry with backoff).
const (
	maxInFlight = 256
	maxQueued   = 4096
	queueWait   = 3 * time.Second
	exitAnswer  = 5 * time.Second // the exit actor's answer to one request (it adds a peer)
)

type queuedRequest struct {
	msg   *nats.Msg
	req   *messages.SessionRequest
	exit  *actor.PID
	until time.Time
}

// refuse answers a message that could not be read (or names no session) with an unsigned refusal.
func (s *signalingActor) refuse(msg *nats.Msg, code, text string) {
	s.cfg.Logger.Warn("signaling message refused", "subject", msg.Subject, "code", code, "reason", text, "bytes", len(msg.Data))
	s.cfg.Stats.Refused.Add(1)
	if msg.Reply == "" {
		return
	}
	_ = msg.Respond(signaling.EncodeError(code, text))
}

// refuseSigned answers a readable request for sessionID from clientID with a signed refusal.
func (s *signalingActor) refuseSigned(msg *nats.Msg, sessionID, clientID, code, text string) {
	s.cfg.Logger.Warn("request refused", "subject", msg.Subject, "session", sessionID, "client", clientID, "code", code, "reason", text)
	s.cfg.Stats.Refused.Add(1)
	if code == messages.ErrCodeReplayed {
		s.cfg.Stats.Replayed.Add(1)
	}
	if msg.Reply == "" || s.cfg.Identity == nil {
		return
	}
	e := &messages.ErrorResponse{Code: code, Message: truncateUTF8(text, 1024), SessionID: sessionID, ClientID: clientID,
		Certificate: s.cfg.ExitCertificate}
	s.cfg.Identity.SignError(e, time.Now())
	if data, err := signaling.Encode(messages.TypeError, e); err == nil {
		_ = msg.Respond(data)
	}
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
		switch {
		case m.msg.Reply == "":
			s.refuse(m.msg, messages.ErrCodeBadRequest, "session request without a reply subject")
		case s.inFlight < maxInFlight:
			s.dispatch(ctx, queuedRequest{msg: m.msg, req: b, exit: m.exit})
		case len(s.queue) < maxQueued:
			s.queue = append(s.queue, queuedRequest{msg: m.msg, req: b, exit: m.exit, until: time.Now().Add(queueWait)})
		default:
			s.refuseSigned(m.msg, b.SessionID, b.ClientID, messages.ErrCodeUnavailable, "too many session requests waiting")
		}
	case *messages.SessionClose:
		ctx.Send(m.exit, &sessionClosedByClient{close: b})
	case *messages.SessionPing:
		s.pinged(ctx, m, b)
	default:
		s.refuse(m.msg, messages.ErrCodeUnknownType, fmt.Sprintf("%T is not a request", body))
	}
}

// dispatch hands one session request to the exit actor and answers it with what comes back.
func (s *signalingActor) dispatch(ctx actor.Context, q queuedRequest) {
	s.inFlight++
	f := ctx.RequestFuture(q.exit, &sessionRequested{req: q.req}, exitAnswer)
	reenter(ctx, f, func(res any, err error) {
		s.inFlight--
		defer s.dequeue(ctx)
		g, ok := res.(*sessionGranted)
		switch {
		case err != nil || !ok:
			s.refuseSigned(q.msg, q.req.SessionID, q.req.ClientID, messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err))
		case g.err != nil:
			s.refuseSigned(q.msg, q.req.SessionID, q.req.ClientID, g.err.Code, g.err.Message)
		default:
			data, err := signaling.Encode(messages.TypeSessionResponse, g.resp)
			if err != nil {
				s.refuseSigned(q.msg, q.req.SessionID, q.req.ClientID, messages.ErrCodeInternal, err.Error())
				return
			}
			_ = q.msg.Respond(data)
		}
	})
}

// dequeue starts the next queued request that has not waited too long; those that have are
// refused "unavailable".
func (s *signalingActor) dequeue(ctx actor.Context) {
	now := time.Now()
	for len(s.queue) > 0 && s.inFlight < maxInFlight {
		q := s.queue[0]
		s.queue[0] = queuedRequest{}
		s.queue = s.queue[1:]
		if now.After(q.until) {
			s.refuseSigned(q.msg, q.req.SessionID, q.req.ClientID, messages.ErrCodeUnavailable, "waited too long for the exit")
			continue
		}
		s.dispatch(ctx, q)
	}
	if len(s.queue) == 0 {
		s.queue = nil // let the backing array go
	}
}

// pinged answers a signed ping with a signed pong: does the exit hold the session, for this client?
func (s *signalingActor) pinged(ctx actor.Context, m *inboundRPC, p *messages.SessionPing) {
	if m.msg.Reply == "" {
		return
	}
	if err := signaling.VerifySessionPing(p, time.Now()); err != nil {
		s.refuseSigned(m.msg, p.SessionID, p.ClientID, messages.ErrCodeForbidden, err.Error())
		return
	}
	msg := m.msg
	f := ctx.RequestFuture(m.exit, &sessionPinged{sessionID: p.SessionID, clientID: p.ClientID, ts: p.Timestamp}, 2*time.Second)
	reenter(ctx, f, func(res any, err error) {
		r, ok := res.(*sessionPong)
		switch {
		case err != nil || !ok:
			s.refuseSigned(msg, p.SessionID, p.ClientID, messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err))
		case r.err != nil:
			s.refuseSigned(msg, p.SessionID, p.ClientID, r.err.Code, r.err.Message)
		case s.cfg.Identity != nil:
			pong := &messages.SessionPong{SessionID: p.SessionID, Nonce: p.Nonce, Known: r.known}
			s.cfg.Identity.SignSessionPong(pong, time.Now())
			if data, err := signaling.Encode(messages.TypeSessionPong, pong); err == nil {
				_ = msg.Respond(data)
			}
		}
	})
}
