package actors

// Exits' goodbyes and drain notices to this engine's clients (legs): the client subject, which
// goodbyes and notices are acted on (valid, for a watched session, signed by that session's exit),
// the ones held between a request and its grant, and the goodbyes that crossed our own.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// subscribeClientEvents subscribes to this engine's client subject (exits' goodbyes) at its first
// session request: an engine that only serves an exit never subscribes, so NATS permissions for
// exits need not name a client subject (docs/security.md). The subscription goes out on the
// connection before the request does, so the server has it before any exit can answer. It stays
// until the actor stops.
func (s *signalingActor) subscribeClientEvents(ctx actor.Context) {
	if s.clientSub != nil || s.cfg.ClientID == "" {
		return
	}
	sub, err := s.subscribeBounded(ctx, signaling.ClientSubject(s.cfg.ClientID), func(msg *nats.Msg) any {
		return &inboundClientEvent{msg: msg}
	})
	if err != nil {
		s.cfg.Logger.Error("subscribe to client events", "err", err)
		return
	}
	s.clientSub = sub
	s.subs = append(s.subs, sub)
}

// handleClientEvent takes an exit's goodbye or drain notice: valid, for a watched session, signed by
// that session's exit. Anything else is dropped and counted, never acted on.
func (s *signalingActor) handleClientEvent(ctx actor.Context, msg *nats.Msg) {
	body, err := signaling.Decode(msg.Data)
	if err != nil {
		s.cfg.Stats.Forged.Add(1)
		s.cfg.Logger.Warn("client event refused", "subject", msg.Subject, "reason", err)
		return
	}
	switch b := body.(type) {
	case *messages.SessionClose:
		s.exitGoodbye(ctx, b)
	case *messages.SessionDraining:
		s.exitDraining(ctx, b)
	default:
		s.cfg.Stats.Forged.Add(1)
		s.cfg.Logger.Warn("client event refused", "subject", msg.Subject, "reason", fmt.Sprintf("unexpected %T", body))
	}
}

// exitGoodbye takes an exit's goodbye: valid, for a watched session, signed by that session's exit.
func (s *signalingActor) exitGoodbye(ctx actor.Context, c *messages.SessionClose) {
	w, ok := s.watched[c.SessionID]
	if !ok {
		// Never acted on; not necessarily forged. One for a session we ended lately crossed our own
		// goodbye (an exit shutting down as our tunnel closes): nothing to warn of.
		s.cfg.Stats.Stale.Add(1)
		lvl := slog.LevelWarn
		if s.unwatched.has(c.SessionID) {
			lvl = slog.LevelDebug
		}
		s.cfg.Logger.Log(context.Background(), lvl, "exit goodbye dropped", "session", c.SessionID, "reason", "no such session here")
		return
	}
	if !s.fromSessionExit("exit goodbye", c.SessionID, c.Signer, w.exitIdentity, func() error { return signaling.VerifySessionClose(c, time.Now()) }) {
		return
	}
	if w.exitIdentity == "" { // not granted yet: hold it, verified, until the grant names the exit
		if len(w.early) < maxEarlyGoodbyes && !slices.ContainsFunc(w.early, func(e *messages.SessionClose) bool { return e.Signer == c.Signer }) {
			w.early = append(w.early, c)
			s.watched[c.SessionID] = w
		}
		return
	}
	delete(s.watched, c.SessionID)
	ctx.Send(w.tunnel, &exitSaidGoodbye{sessionID: c.SessionID, reason: c.Reason})
}

// exitDraining takes an exit's drain notice like a goodbye: valid, for a watched and granted session,
// signed by that session's exit; the session stays watched (its goodbye comes later). A notice that
// overtakes the grant is held, verified, like an early goodbye (one per signer).
func (s *signalingActor) exitDraining(ctx actor.Context, d *messages.SessionDraining) {
	w, ok := s.watched[d.SessionID]
	if !ok {
		s.cfg.Stats.Stale.Add(1)
		s.cfg.Logger.Debug("exit drain notice dropped", "session", d.SessionID, "reason", "no such session here")
		return
	}
	if !s.fromSessionExit("exit drain notice", d.SessionID, d.Signer, w.exitIdentity, func() error { return signaling.VerifySessionDraining(d, time.Now()) }) {
		return
	}
	if w.exitIdentity == "" {
		if len(w.earlyDrain) < maxEarlyGoodbyes && !slices.ContainsFunc(w.earlyDrain, func(e *messages.SessionDraining) bool { return e.Signer == d.Signer }) {
			w.earlyDrain = append(w.earlyDrain, d)
			s.watched[d.SessionID] = w
		}
		return
	}
	ctx.Send(w.tunnel, drainNotice(d))
}

// fromSessionExit reports whether an exit's message about a watched session may be acted on: once
// the session is granted (exitIdentity set) it must be signed by that identity, and it must verify
// (checked last: a signature costs more than a comparison). Otherwise it is counted forged and
// logged, never acted on.
func (s *signalingActor) fromSessionExit(what, sessionID, signer, exitIdentity string, verify func() error) bool {
	var reason any
	if exitIdentity != "" && signer != exitIdentity {
		reason = "not signed by the session's exit"
	} else if err := verify(); err != nil {
		reason = err
	} else {
		return true
	}
	s.cfg.Stats.Forged.Add(1)
	s.cfg.Logger.Warn(what+" refused", "session", sessionID, "reason", reason)
	return false
}

func drainNotice(d *messages.SessionDraining) *exitDraining {
	return &exitDraining{sessionID: d.SessionID, drain: time.Duration(d.DrainMS) * time.Millisecond}
}

// watch records a granted session's exit identity; a goodbye (or drain notice) held since the
// request is delivered now if that exit signed it.
func (s *signalingActor) watch(ctx actor.Context, m *watchSession) {
	w := s.watched[m.sessionID]
	s.watched[m.sessionID] = watchedSession{tunnel: m.tunnel, exitIdentity: m.exitIdentity}
	for i, d := range w.earlyDrain {
		if d.Signer == m.exitIdentity {
			ctx.Send(m.tunnel, drainNotice(d))
			w.earlyDrain = slices.Delete(w.earlyDrain, i, i+1)
			break
		}
	}
	if len(w.earlyDrain) > 0 {
		s.cfg.Stats.Forged.Add(int64(len(w.earlyDrain)))
		s.cfg.Logger.Warn("exit drain notice refused", "session", m.sessionID, "reason", "not signed by the session's exit", "held", len(w.earlyDrain))
	}
	for _, c := range w.early {
		if c.Signer == m.exitIdentity {
			delete(s.watched, m.sessionID)
			ctx.Send(m.tunnel, &exitSaidGoodbye{sessionID: m.sessionID, reason: c.Reason})
			return
		}
	}
	if len(w.early) > 0 {
		s.cfg.Stats.Forged.Add(int64(len(w.early)))
		s.cfg.Logger.Warn("exit goodbye refused", "session", m.sessionID, "reason", "not signed by the session's exit", "held", len(w.early))
	}
}

// unwatch forgets a session (its leg ended it) and remembers that it did.
func (s *signalingActor) unwatch(sessionID string) {
	if _, ok := s.watched[sessionID]; ok {
		delete(s.watched, sessionID)
		s.unwatched.add(sessionID)
	}
}

// recentSessions remembers the last maxRecentSessions session ids added, oldest forgotten first.
type recentSessions struct {
	ids  map[string]bool
	ring []string
	next int
}

func (r *recentSessions) add(id string) {
	if r.ids == nil {
		r.ids, r.ring = map[string]bool{}, make([]string, maxRecentSessions)
	}
	delete(r.ids, r.ring[r.next])
	r.ring[r.next], r.ids[id] = id, true
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recentSessions) has(id string) bool { return r.ids[id] }
