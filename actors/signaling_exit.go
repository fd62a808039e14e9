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
	maxBacklog  = 4096 // messages for an exit waiting in the signaling actor's mailbox
	// maxEarlyGoodbyes: goodbyes held for one session between its request and its grant (one per
	// signer; signaling.go).
	maxEarlyGoodbyes = 4
	// maxRecentSessions: sessions this engine ended lately, remembered so that an exit's goodbye
	// that crossed ours is not taken for a forgery (signaling_goodbye.go).
	maxRecentSessions = 1024
)

type queuedRequest struct {
	msg    *nats.Msg
	req    *messages.SessionRequest
	exit   *actor.PID
	exitID string
	until  time.Time
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

// refuseSigned answers a verified request or ping (r says which session, client, exit and ping
// nonce it refuses) with a refusal signed by this engine and bound to all of them. Only verified
// messages get one: otherwise anyone could have the exit sign a refusal bound to someone else's
// session and hand it to them (docs/security.md).
func (s *signalingActor) refuseSigned(msg *nats.Msg, r *messages.ErrorResponse) {
	s.cfg.Logger.Warn("request refused", "subject", msg.Subject, "session", r.SessionID, "client", r.ClientID, "code", r.Code, "reason", r.Message)
	s.cfg.Stats.Refused.Add(1)
	if r.Code == messages.ErrCodeReplayed {
		s.cfg.Stats.Replayed.Add(1)
	}
	if msg.Reply == "" || s.cfg.Identity == nil {
		return
	}
	r.Message, r.Certificate = truncateUTF8(r.Message, 1024), s.cfg.ExitCertificate
	s.cfg.Identity.SignError(r, time.Now())
	if data, err := signaling.Encode(messages.TypeError, r); err == nil {
		_ = msg.Respond(data)
	}
}

// refuseRequest refuses a verified session request.
func (s *signalingActor) refuseRequest(q queuedRequest, code, text string) {
	s.refuseSigned(q.msg, &messages.ErrorResponse{Code: code, Message: text, SessionID: q.req.SessionID,
		ClientID: q.req.ClientID, ExitID: q.exitID})
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
		q := queuedRequest{msg: m.msg, req: b, exit: m.exit, exitID: m.exitID}
		if err := signaling.VerifySessionRequest(b, time.Now()); err != nil {
			s.refuse(m.msg, messages.ErrCodeForbidden, err.Error()) // unsigned: it proves nothing about anyone
			return
		}
		switch {
		case m.msg.Reply == "":
			s.refuse(m.msg, messages.ErrCodeBadRequest, "session request without a reply subject")
		case s.inFlight < maxInFlight:
			s.dispatch(ctx, q)
		case len(s.queue) < maxQueued:
			q.until = time.Now().Add(queueWait)
			s.queue = append(s.queue, q)
		default:
			s.refuseRequest(q, messages.ErrCodeUnavailable, "too many session requests waiting")
		}
	case *messages.SessionClose:
		if err := signaling.VerifySessionClose(b, time.Now()); err != nil {
			s.cfg.Stats.Forged.Add(1)
			s.cfg.Logger.Warn("client goodbye dropped", "session", b.SessionID, "reason", err)
			return
		}
		ctx.Send(m.exit, &sessionClosedByClient{close: b})
	case *messages.SessionsPing:
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
			s.refuseRequest(q, messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err))
		case g.err != nil:
			s.refuseRequest(q, g.err.Code, g.err.Message)
		default:
			data, err := signaling.Encode(messages.TypeSessionResponse, g.resp)
			if err != nil {
				s.refuseRequest(q, messages.ErrCodeInternal, err.Error())
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
			s.refuseRequest(q, messages.ErrCodeUnavailable, "waited too long for the exit")
			continue
		}
		s.dispatch(ctx, q)
	}
	if len(s.queue) == 0 {
		s.queue = nil // let the backing array go
	}
}

// pinged answers a signed ping with a signed pong: which of the sessions does the exit hold, for
// this client? Another client's session is simply not among them: the pong says nothing about it.
func (s *signalingActor) pinged(ctx actor.Context, m *inboundRPC, p *messages.SessionsPing) {
	if m.msg.Reply == "" {
		s.cfg.Stats.Forged.Add(1)
		s.cfg.Logger.Warn("ping dropped", "subject", m.msg.Subject, "reason", "no reply subject")
		return
	}
	if err := signaling.VerifySessionsPing(p, time.Now()); err != nil {
		s.refuse(m.msg, messages.ErrCodeForbidden, err.Error()) // unsigned: it proves nothing about anyone
		return
	}
	msg, exitID := m.msg, m.exitID
	f := ctx.RequestFuture(m.exit, &sessionsPinged{sessionIDs: p.SessionIDs, clientID: p.ClientID, ts: p.Timestamp}, exitPingWait)
	reenter(ctx, f, func(res any, err error) {
		refusal := &messages.ErrorResponse{ClientID: p.ClientID, ExitID: exitID, Nonce: p.Nonce}
		r, ok := res.(*sessionsPong)
		switch {
		case err != nil || !ok:
			refusal.Code, refusal.Message = messages.ErrCodeUnavailable, fmt.Sprintf("exit did not answer: %v", err)
			s.refuseSigned(msg, refusal)
		case r.err != nil:
			refusal.Code, refusal.Message = r.err.Code, r.err.Message
			s.refuseSigned(msg, refusal)
		case s.cfg.Identity != nil:
			pong := &messages.SessionsPong{Nonce: p.Nonce, ExitID: exitID, ClientID: p.ClientID, Known: r.known}
			s.cfg.Identity.SignSessionsPong(pong, time.Now())
			if data, err := signaling.Encode(messages.TypeSessionsPong, pong); err == nil {
				_ = msg.Respond(data)
			}
		}
	})
}
