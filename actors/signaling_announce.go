package actors

// The exit's voice to the directory, in the signaling actor: its announcements published on
// warren.v1.exits.announce, discovery requests on warren.v1.exits.discover answered with a freshly
// signed announcement (asked of the exit actor, which signs it), and the drain notices to its
// clients. Anyone on the bus may publish a discovery request with a reply subject of their
// choosing, so the answers are bounded: a token bucket (discoverRate a second, discoverBurst at
// once) is checked in the subscription's callback, before the mailbox; past it the request is
// dropped and counted (SignalingStats.Dropped).

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// Discovery answers per second of this engine's exit, and the burst (docs/security.md).
const (
	discoverRate  = 20
	discoverBurst = 50
	describeWait  = time.Second // the exit actor's fresh announcement for a discovery answer
)

// announce publishes an exit's signed announcement. The sender (exit) answers discovery from then
// on (describeExit), until it announces that it leaves.
type announce struct {
	a    *messages.ExitAnnouncement
	exit *actor.PID
}

// describeExit asks the exit for a freshly signed announcement; the reply is *exitDescribed (a nil
// announcement: the exit does not announce, or no longer).
type describeExit struct{}

type exitDescribed struct{ a *messages.ExitAnnouncement }

// sendSessionDraining publishes an exit's drain notice to a client; fire and forget.
type sendSessionDraining struct {
	clientID string
	draining *messages.SessionDraining
}

type inboundDiscover struct{ msg *nats.Msg }

func (s *signalingActor) announce(ctx actor.Context, m *announce) {
	data, err := signaling.Encode(messages.TypeExitAnnouncement, m.a)
	if err == nil {
		err = s.cfg.Conn.Publish(signaling.AnnounceSubject, data)
	}
	if err != nil {
		s.cfg.Logger.Warn("exit announcement not sent", "exit", m.a.ExitID, "state", m.a.State, "err", err)
	}
	if m.a.State == messages.ExitLeaving {
		s.announcer = nil // discovery finds this engine's exit no more
		return
	}
	s.announcer = m.exit
	s.serveDiscovery(ctx)
}

// serveDiscovery subscribes to the discovery subject once, at the exit's first announcement.
func (s *signalingActor) serveDiscovery(ctx actor.Context) {
	if s.discoverSub != nil {
		return
	}
	bucket, stats := &rateBucket{tokens: discoverBurst, last: time.Now()}, s.cfg.Stats
	// The callback runs on the subscription's own goroutine, one message at a time: the bucket is
	// its alone.
	sub, err := s.subscribeBounded(ctx, signaling.DiscoverSubject, func(msg *nats.Msg) any {
		now := time.Now()
		bucket.tokens = min(discoverBurst, bucket.tokens+now.Sub(bucket.last).Seconds()*discoverRate)
		bucket.last = now
		if bucket.tokens < 1 {
			stats.Dropped.Add(1)
			return nil
		}
		bucket.tokens--
		return &inboundDiscover{msg: msg}
	})
	if err != nil {
		s.cfg.Logger.Error("subscribe to exit discovery", "err", err)
		return
	}
	s.discoverSub = sub
	s.subs = append(s.subs, sub)
}

// discovered answers a valid discovery request that names a reply subject with the exit's freshly
// signed announcement.
func (s *signalingActor) discovered(ctx actor.Context, msg *nats.Msg) {
	body, err := signaling.Decode(msg.Data)
	if err == nil {
		if _, ok := body.(*messages.ExitsDiscover); !ok {
			err = &signaling.WireError{Code: messages.ErrCodeUnknownType, Message: "not a discovery request"}
		}
	}
	switch {
	case err != nil:
		s.cfg.Stats.Refused.Add(1)
		s.cfg.Logger.Warn("discovery request dropped", "reason", err, "bytes", len(msg.Data))
		return
	case msg.Reply == "":
		s.cfg.Stats.Refused.Add(1)
		s.cfg.Logger.Warn("discovery request dropped", "reason", "no reply subject")
		return
	case s.announcer == nil:
		return
	}
	f := ctx.RequestFuture(s.announcer, &describeExit{}, describeWait)
	reenter(ctx, f, func(res any, err error) {
		r, ok := res.(*exitDescribed)
		if err != nil || !ok || r.a == nil {
			return
		}
		data, err := signaling.Encode(messages.TypeExitAnnouncement, r.a)
		if err == nil {
			err = msg.Respond(data)
		}
		if err != nil {
			s.cfg.Logger.Warn("discovery answer not sent", "exit", r.a.ExitID, "err", err)
		}
	})
}

// sendDraining publishes an exit's drain notice on the client's events subject.
func (s *signalingActor) sendDraining(m *sendSessionDraining) {
	data, err := signaling.Encode(messages.TypeSessionDraining, m.draining)
	if err == nil {
		err = s.cfg.Conn.Publish(signaling.ClientSubject(m.clientID), data)
	}
	if err != nil {
		s.cfg.Logger.Warn("drain notice not sent", "client", m.clientID, "session", m.draining.SessionID, "err", err)
	}
}
