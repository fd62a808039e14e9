package actors

// The client side of exit discovery in the signaling actor (docs/pool.md, docs/signaling.md): it
// subscribes to signaling.AnnounceSubject while a directory watches, and runs the directory's
// discovery rounds (an exits.discover request with a reply inbox of its own, answered by every
// exit). What it hands on is only decoded and validated: each *messages.ExitAnnouncement goes to the
// directory as it is, and the directory verifies its signature, clock and trust before it changes
// anything. What waits in the directory's mailbox is bounded too (maxAnnounceBacklog), so a flood
// of well-formed forgeries costs bounded memory there as well as here.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// maxAnnounceBacklog: announcements handed to one directory and not yet taken by it; past it the
// rest are dropped and counted (SignalingStats.Dropped).
const maxAnnounceBacklog = 1024

// directorySignal marks the messages the signaling actor hands to directorySignal (one case in
// its Receive).
type directorySignal interface{ directorySignal() }

// watchAnnouncements subscribes pid (a directory) to exits' announcements: it hears each decoded,
// validated *messages.ExitAnnouncement from signaling.AnnounceSubject and from its discovery rounds,
// and decrements queued as it takes each. unwatchAnnouncements ends it, and any round of pid's.
type watchAnnouncements struct {
	pid    *actor.PID
	queued *atomic.Int64
}

type unwatchAnnouncements struct{ pid *actor.PID }

// discoverExits starts a discovery round for the sender, a watcher of announcements: an
// exits.discover request to signaling.DiscoverSubject, whose answers the sender hears as
// announcements until it ends the round (endDiscovery). A round still open for the sender is ended
// first. If the request cannot be sent the sender hears discoveryEnded at once.
type discoverExits struct{ round int }

// endDiscovery ends the sender's round; it hears discoveryEnded once every answer already taken
// from NATS has been handed on.
type endDiscovery struct{ round int }

// discoveryEnded answers endDiscovery (or a round that could not start: err).
type discoveryEnded struct {
	round, answers int
	err            error
}

type inboundAnnouncement struct{ msg *nats.Msg }

// inboundDiscovered is an answer to a discovery round of watcher.
type inboundDiscovered struct {
	msg     *nats.Msg
	watcher string // its PID id
	round   int
}

func (*watchAnnouncements) directorySignal()   {}
func (*unwatchAnnouncements) directorySignal() {}
func (*discoverExits) directorySignal()        {}
func (*endDiscovery) directorySignal()         {}
func (*inboundAnnouncement) directorySignal()  {}
func (*inboundDiscovered) directorySignal()    {}

// announceWatcher is one directory that watches announcements, with its open discovery round.
type announceWatcher struct {
	pid    *actor.PID
	queued *atomic.Int64
	round  *discoveryRound
}

type discoveryRound struct {
	round   int
	sub     *nats.Subscription
	answers int
}

// directorySignaling is the signaling actor's state for directories: the announce subscription
// (while anyone watches) and the watchers.
type directorySignaling struct {
	sub      *nats.Subscription
	watchers map[string]*announceWatcher // by PID id
}

func (s *signalingActor) directorySignal(ctx actor.Context, m directorySignal) {
	d := &s.dir
	if d.watchers == nil {
		d.watchers = map[string]*announceWatcher{}
	}
	switch m := m.(type) {
	case *watchAnnouncements:
		s.watchAnnouncements(ctx, m)
	case *unwatchAnnouncements:
		s.unwatchAnnouncements(m.pid)
	case *discoverExits, *endDiscovery:
		s.discoveryRound(ctx)
	case *inboundAnnouncement:
		s.backlog.Add(-1)
		if a := s.decodeAnnouncement(m.msg); a != nil {
			for _, w := range d.watchers {
				s.handOn(ctx, w, a)
			}
		}
	case *inboundDiscovered:
		s.backlog.Add(-1)
		w := d.watchers[m.watcher]
		if w == nil || w.round == nil || w.round.round != m.round || isNoResponders(m.msg) {
			return // a late answer of a round that ended; or no exit at all is there
		}
		if a := s.decodeAnnouncement(m.msg); a != nil {
			w.round.answers++
			s.handOn(ctx, w, a)
		}
	}
}

func (s *signalingActor) unwatchAnnouncements(pid *actor.PID) {
	d := &s.dir
	if w := d.watchers[pid.Id]; w != nil {
		s.endRound(w)
		delete(d.watchers, pid.Id)
	}
	if len(d.watchers) == 0 && d.sub != nil {
		s.dropSub(d.sub)
		d.sub = nil
	}
}

// discoveryRound starts (discoverExits) or ends (endDiscovery) the sender's discovery round.
func (s *signalingActor) discoveryRound(ctx actor.Context) {
	sender := ctx.Sender()
	if sender == nil {
		return // only a watcher's request has someone to hear the end
	}
	w := s.dir.watchers[sender.Id]
	switch m := ctx.Message().(type) {
	case *discoverExits:
		err := fmt.Errorf("discover exits: %s does not watch announcements", sender.Id)
		if w != nil {
			err = s.discover(ctx, w, m.round)
		}
		if err != nil {
			ctx.Respond(&discoveryEnded{round: m.round, err: err})
		}
	case *endDiscovery:
		answers := 0
		if w != nil && w.round != nil && w.round.round == m.round {
			answers = w.round.answers
			s.endRound(w)
		}
		ctx.Respond(&discoveryEnded{round: m.round, answers: answers})
	}
}

func (s *signalingActor) watchAnnouncements(ctx actor.Context, m *watchAnnouncements) {
	d := &s.dir
	if d.watchers[m.pid.Id] == nil {
		d.watchers[m.pid.Id] = &announceWatcher{pid: m.pid, queued: m.queued}
	}
	if d.sub != nil {
		return
	}
	sub, err := s.subscribeBounded(ctx, signaling.AnnounceSubject, func(msg *nats.Msg) any {
		return &inboundAnnouncement{msg: msg}
	})
	if err != nil {
		// The directory still has its discovery rounds; a later watcher tries again.
		s.cfg.Logger.Error("subscribe to exit announcements", "err", err)
		return
	}
	d.sub = sub
	s.subs = append(s.subs, sub)
}

// discover publishes an exits.discover request whose answers come to an inbox of this round's.
func (s *signalingActor) discover(ctx actor.Context, w *announceWatcher, round int) error {
	s.endRound(w)
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	data, err := signaling.Encode(messages.TypeExitsDiscover, &messages.ExitsDiscover{Nonce: hex.EncodeToString(nonce[:])})
	if err != nil {
		return fmt.Errorf("discover exits: %w", err)
	}
	inbox, watcher := s.cfg.Conn.NewInbox(), w.pid.Id
	sub, err := s.subscribeBounded(ctx, inbox, func(msg *nats.Msg) any {
		return &inboundDiscovered{msg: msg, watcher: watcher, round: round}
	})
	if err != nil {
		return fmt.Errorf("discover exits: %w", err)
	}
	if err := s.cfg.Conn.PublishRequest(signaling.DiscoverSubject, inbox, data); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("discover exits: %w", err)
	}
	w.round = &discoveryRound{round: round, sub: sub}
	s.subs = append(s.subs, sub)
	return nil
}

func (s *signalingActor) endRound(w *announceWatcher) {
	if w.round != nil {
		s.dropSub(w.round.sub)
		w.round = nil
	}
}

// dropSub unsubscribes sub and forgets it (it is no longer the Stopping's to release).
func (s *signalingActor) dropSub(sub *nats.Subscription) {
	_ = sub.Unsubscribe()
	s.subs = slices.DeleteFunc(s.subs, func(x *nats.Subscription) bool { return x == sub })
}

// decodeAnnouncement returns a decoded, validated announcement, or nil (dropped, counted, logged).
func (s *signalingActor) decodeAnnouncement(msg *nats.Msg) *messages.ExitAnnouncement {
	body, err := signaling.Decode(msg.Data)
	if err == nil {
		if a, ok := body.(*messages.ExitAnnouncement); ok {
			return a
		}
		err = fmt.Errorf("unexpected %T", body)
	}
	s.cfg.Stats.AnnouncementsMalformed.Add(1)
	s.cfg.Logger.Warn("exit announcement dropped", "subject", msg.Subject, "reason", err, "bytes", len(msg.Data))
	return nil
}

// handOn gives a to w's directory, unless maxAnnounceBacklog are waiting for it already.
func (s *signalingActor) handOn(ctx actor.Context, w *announceWatcher, a *messages.ExitAnnouncement) {
	if w.queued.Add(1) > maxAnnounceBacklog {
		w.queued.Add(-1)
		s.cfg.Stats.Dropped.Add(1)
		return
	}
	ctx.Send(w.pid, a)
}
