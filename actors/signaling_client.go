package actors

// The client half of the signaling actor: session requests and pings to exits. The bus is hostile
// (docs/security.md): a reply is an answer only if it is signed by an identity the tunnel trusts for
// that exit and bound to this very request (its session id and client, or the ping's nonce).
// Anything else — forged, unsigned, for another request, from an untrusted identity — is dropped,
// counted, and the request goes on waiting for the genuine answer until its own deadline.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// SignalingStats counts what signaling dropped or refused; statistics only (no actor acts on them).
type SignalingStats struct {
	Forged     atomic.Int64 // replies, pongs and goodbyes that failed verification or were not for their request
	Unsigned   atomic.Int64 // refusals without a signature (never taken as an answer)
	Untrusted  atomic.Int64 // answers signed by an identity not trusted for that exit
	Replayed   atomic.Int64 // requests an exit had already seen
	Refused    atomic.Int64 // requests this engine's exit refused (any code)
	Unanswered atomic.Int64 // "no responders" and retries of "unavailable"
	Stale      atomic.Int64 // genuine-looking goodbyes for sessions not (or no longer) here
	// SlowConsumer: times NATS reported dropping messages for a subscription (nats.go async errors)
	SlowConsumer atomic.Int64
	Dropped      atomic.Int64 // messages to this engine's subjects dropped because its backlog was full (announcements: also the directory's backlog, or a full directory)
	// Exits' announcements (and answers to discovery) dropped by the exit directory, by why.
	AnnouncementsMalformed atomic.Int64 // undecodable, invalid, oversize, or not an announcement
	AnnouncementsForged    atomic.Int64 // bad signature, or a timestamp off the clock
	AnnouncementsUntrusted atomic.Int64 // signed by an identity not trusted for its exit id
	AnnouncementsStale     atomic.Int64 // no newer than what the directory has (or had) of that exit: a replay
	// RTT: signaling round trips, a session request's last publish to its verified answer (a grant
	// or a signed refusal) and a sessions ping to its verified pong.
	RTT RTTHistogram
}

// request runs one session request in a goroutine the actor owns (cancelled and awaited in
// Stopping) and sends the outcome straight to the requester.
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
		defer func() { system.Root.Send(requester, reply) }()
		defer s.recoverInto(&reply.err, "session request")
		reply.resp, reply.err = s.awaitSession(rctx, m, data)
	}()
}

// awaitSession publishes the request and reads replies on its own inbox until one is a trusted
// answer, the exit is not there at all, or ctx ends. A trusted "unavailable" is retried with
// backoff (the same signed request: the exit has not recorded it).
func (s *signalingActor) awaitSession(ctx context.Context, m *requestSession, data []byte) (*messages.SessionResponse, error) {
	nc, subject := s.cfg.Conn, signaling.ExitSubject(m.exitID)
	sub, inbox, err := s.ask(subject, data)
	if err != nil {
		return nil, fmt.Errorf("%w: exit %q: %w", ErrExitUnreachable, m.exitID, err)
	}
	sent := time.Now()
	defer func() { _ = sub.Unsubscribe() }()
	wait, lastRefusal := retryUnavailableMin, error(nil)
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			switch {
			case errors.Is(err, nats.ErrSlowConsumer):
				continue
			case lastRefusal != nil:
				return nil, lastRefusal
			case ctx.Err() != nil:
				return nil, fmt.Errorf("%w: exit %q: no trusted answer: %w", ErrExitUnreachable, m.exitID, ctx.Err())
			}
			return nil, fmt.Errorf("%w: exit %q: %w", ErrExitUnreachable, m.exitID, err)
		}
		if isNoResponders(msg) {
			// The server's own status: unsigned by nature (docs/security.md: permissions keep
			// others from publishing to a client's inbox).
			s.cfg.Stats.Unanswered.Add(1)
			return nil, fmt.Errorf("%w: no exit %q is serving", ErrExitUnreachable, m.exitID)
		}
		resp, refusal, err := s.checkSessionReply(msg.Data, m)
		switch {
		case err != nil:
			s.cfg.Logger.Warn("session reply dropped", "exit", m.exitID, "session", m.req.SessionID, "reason", err)
		case resp != nil:
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			return resp, nil
		case refusal.Code == messages.ErrCodeUnavailable:
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			s.cfg.Stats.Unanswered.Add(1)
			lastRefusal = fmt.Errorf("%w: %w", ErrSessionRefused, refusal)
			if !s.sleepCtx(ctx, wait) {
				return nil, lastRefusal
			}
			wait = min(wait*2, retryUnavailableMax)
			if err := nc.PublishRequest(subject, inbox, data); err != nil {
				return nil, fmt.Errorf("%w: exit %q: %w", ErrExitUnreachable, m.exitID, err)
			}
			sent = time.Now()
		case refusal.Code == messages.ErrCodeDraining: // final for this exit: no retry
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			return nil, fmt.Errorf("%w: %w: %w", ErrSessionRefused, ErrExitDraining, refusal)
		default:
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			return nil, fmt.Errorf("%w: %w", ErrSessionRefused, refusal)
		}
	}
}

// recoverInto turns a panic while reading replies (untrusted input) into an error for the requester,
// logged with its stack: the request fails, the process goes on.
func (s *signalingActor) recoverInto(err *error, what string) {
	if r := recover(); r != nil {
		s.cfg.Logger.Error(what+" panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = fmt.Errorf("%s: internal error: %v", what, r)
	}
}

// ask publishes data to subject with a reply inbox of its own, whose subscription the caller reads
// and unsubscribes. Only a few replies are queued: a flood of forgeries is dropped by NATS.
func (s *signalingActor) ask(subject string, data []byte) (*nats.Subscription, string, error) {
	inbox := s.cfg.Conn.NewInbox()
	sub, err := s.cfg.Conn.SubscribeSync(inbox)
	if err != nil {
		return nil, "", err
	}
	_ = sub.SetPendingLimits(64, 1<<20)
	if err := s.cfg.Conn.PublishRequest(subject, inbox, data); err != nil {
		_ = sub.Unsubscribe()
		return nil, "", err
	}
	return sub, inbox, nil
}

// sleepCtx waits d (a retry's backoff; not a synchronisation) unless ctx ends first.
func (s *signalingActor) sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func isNoResponders(msg *nats.Msg) bool {
	return len(msg.Data) == 0 && msg.Header != nil && msg.Header.Get("Status") == "503"
}

// checkSessionReply returns a trusted response or a trusted refusal; err says why a reply was
// dropped (and it is counted).
func (s *signalingActor) checkSessionReply(data []byte, m *requestSession) (*messages.SessionResponse, *signaling.WireError, error) {
	body, err := signaling.Decode(data)
	if err != nil {
		s.cfg.Stats.Forged.Add(1)
		return nil, nil, fmt.Errorf("malformed: %w", err)
	}
	now := time.Now()
	switch b := body.(type) {
	case *messages.SessionResponse:
		bound := b.SessionID == m.req.SessionID && b.ClientID == m.req.ClientID && b.ExitID == m.exitID
		if err := s.trusted(m, bound, func() error { return signaling.VerifySessionResponse(b, now) }, b.ExitIdentity, b.Certificate, now); err != nil {
			return nil, nil, err
		}
		return b, nil, nil
	case *messages.ErrorResponse:
		if b.Signer == "" {
			s.cfg.Stats.Unsigned.Add(1)
			return nil, nil, fmt.Errorf("unsigned refusal %q", b.Code)
		}
		if b.Code == messages.ErrCodeReplayed {
			// This client sent its request once (retries of "unavailable" are never recorded by
			// the exit): a replay refusal answers someone's copy of it, not this request.
			s.cfg.Stats.Forged.Add(1)
			return nil, nil, errors.New("a refusal of a copy of this request")
		}
		bound := b.SessionID == m.req.SessionID && b.ClientID == m.req.ClientID && b.ExitID == m.exitID
		if err := s.trusted(m, bound, func() error { return signaling.VerifyError(b, now) }, b.Signer, b.Certificate, now); err != nil {
			return nil, nil, err
		}
		return nil, &signaling.WireError{Code: b.Code, Message: b.Message}, nil
	}
	s.cfg.Stats.Forged.Add(1)
	return nil, nil, fmt.Errorf("unexpected %T", body)
}

// trusted judges a signed answer to m: bound to this very request, its signature valid (checked
// only then), and its signer trusted for the exit — a pin, the exit's certificate, or any exit
// where declared. Each failure is counted as the kind of drop it is.
func (s *signalingActor) trusted(m *requestSession, bound bool, verify func() error, signer, cert string, now time.Time) error {
	if !bound {
		s.cfg.Stats.Forged.Add(1)
		return errors.New("an answer to another request")
	}
	if err := verify(); err != nil {
		s.cfg.Stats.Forged.Add(1)
		return err
	}
	if err := m.trust.Check(m.exitID, signer, cert, now); err != nil {
		s.cfg.Stats.Untrusted.Add(1)
		return err
	}
	return nil
}

// ping runs one sessions ping in a goroutine the actor owns and answers the requester directly.
func (s *signalingActor) ping(ctx actor.Context, m *pingSessions) {
	requester, system := ctx.Sender(), ctx.ActorSystem()
	if !s.cfg.Conn.IsConnected() || s.cfg.Identity == nil {
		ctx.Send(requester, &pingReply{req: m, err: fmt.Errorf("%w: not connected", signaling.ErrNATSUnavailable)})
		return
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	p := &messages.SessionsPing{SessionIDs: m.sessionIDs, Nonce: hex.EncodeToString(nonce[:])}
	s.cfg.Identity.SignSessionsPing(p, time.Now())
	data, err := signaling.Encode(messages.TypeSessionsPing, p)
	if err != nil {
		ctx.Send(requester, &pingReply{req: m, err: err})
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		rctx, cancel := context.WithTimeout(s.ctx, m.timeout)
		defer cancel()
		reply := &pingReply{}
		defer func() { reply.req = m; system.Root.Send(requester, reply) }()
		defer s.recoverInto(&reply.err, "sessions ping")
		reply = s.awaitPong(rctx, m, p, data)
	}()
}

// awaitPong waits for a pong signed by the sessions' exit that carries the ping's nonce.
func (s *signalingActor) awaitPong(ctx context.Context, m *pingSessions, p *messages.SessionsPing, data []byte) *pingReply {
	sub, _, err := s.ask(signaling.ExitSubject(m.exitID), data)
	if err != nil {
		return &pingReply{err: fmt.Errorf("ping exit %q: %w", m.exitID, err)}
	}
	sent := time.Now()
	defer func() { _ = sub.Unsubscribe() }()
	drop := func(what string, reason any) {
		s.cfg.Logger.Warn(what+" dropped", "exit", m.exitID, "sessions", len(p.SessionIDs), "reason", reason)
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrSlowConsumer) {
			continue
		}
		if err != nil {
			return &pingReply{err: fmt.Errorf("ping exit %q: %w", m.exitID, err)}
		}
		if isNoResponders(msg) {
			return &pingReply{err: fmt.Errorf("ping exit %q: %w", m.exitID, nats.ErrNoResponders)}
		}
		body, err := signaling.Decode(msg.Data)
		if err != nil {
			s.cfg.Stats.Forged.Add(1)
			drop("pong", err)
			continue
		}
		switch b := body.(type) {
		case *messages.SessionsPong:
			known, ok := knownOf(p.SessionIDs, b.Known)
			if !ok || b.Nonce != p.Nonce || b.Signer != m.exitIdentity || b.ExitID != m.exitID || b.ClientID != p.ClientID {
				s.cfg.Stats.Forged.Add(1)
				drop("pong", "not the sessions exit's answer to this ping")
				continue
			}
			if err := signaling.VerifySessionsPong(b, time.Now()); err != nil {
				s.cfg.Stats.Forged.Add(1)
				drop("pong", err)
				continue
			}
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			return &pingReply{known: known}
		case *messages.ErrorResponse:
			if b.Signer == "" {
				s.cfg.Stats.Unsigned.Add(1)
				drop("ping refusal", "unsigned "+b.Code)
				continue
			}
			if b.Signer != m.exitIdentity || b.SessionID != "" || b.ClientID != p.ClientID ||
				b.ExitID != m.exitID || b.Nonce != p.Nonce || signaling.VerifyError(b, time.Now()) != nil {
				s.cfg.Stats.Forged.Add(1)
				drop("ping refusal", "not the sessions exit's answer to this ping")
				continue
			}
			s.cfg.Stats.RTT.Observe(time.Since(sent))
			return &pingReply{err: fmt.Errorf("ping exit %q: %w", m.exitID, &signaling.WireError{Code: b.Code, Message: b.Message})}
		default:
			s.cfg.Stats.Forged.Add(1)
			drop("pong", fmt.Sprintf("unexpected %T", body))
		}
	}
}

// knownOf turns a pong's Known list into a set; ok is false if it names a session that was not asked.
func knownOf(asked, known []string) (map[string]bool, bool) {
	set := make(map[string]bool, len(known))
	for _, id := range known {
		if !slices.Contains(asked, id) {
			return nil, false
		}
		set[id] = true
	}
	return set, true
}
