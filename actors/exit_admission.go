package actors

// Admission on an exit: what a remote party controls is bounded before it costs the exit anything.
// A session request is admitted only if, in this order: it is signed and fresh (signaling), the
// client is allowed (allowed_clients, an operator certificate, or an open exit), it was never seen
// before (replay), the client's request rate is within its budget, and the client holds fewer than
// MaxSessionsPerClient sessions. Pings are answered only for the session's own client, each with a
// newer timestamp than the last. Every refusal has its own wire code (docs/security.md).

import (
	"time"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// replayWindow: a request older than MaxClockSkew is refused as stale, so a seen request id needs
// remembering only until its timestamp is that old.
const replayWindow = signaling.MaxClockSkew

// maxRemembered bounds the replay cache and the rate buckets; past it, new requests are refused
// "unavailable" until entries expire (a flood of fresh identities cannot grow memory unbounded).
const maxRemembered = 1 << 17

type rateBucket struct {
	tokens float64
	last   time.Time
}

// admission is the exit's admission state; owned by the exit actor.
type admission struct {
	seen     map[string]time.Time   // request session ids → when they may be forgotten
	buckets  map[string]*rateBucket // per client identity
	perConn  map[string]int         // sessions (granted or being set up) per client identity
	inserted int                    // since the last sweep
}

func newAdmission() admission {
	return admission{seen: map[string]time.Time{}, buckets: map[string]*rateBucket{}, perConn: map[string]int{}}
}

// admitRequest returns a refusal (code and text) or "" when req may have a session. On success the
// request id is remembered and the client's session count taken; release gives the count back.
func (e *exitActor) admitRequest(req *messages.SessionRequest, now time.Time) (code, text string) {
	a := &e.adm
	if !e.admits(req, now) {
		return messages.ErrCodeForbidden, "client not allowed"
	}
	if _, dup := a.seen[req.SessionID]; dup || e.sessions[req.SessionID] != nil {
		return messages.ErrCodeReplayed, "request already seen"
	}
	a.maybeSweep(now)
	if len(a.seen) >= maxRemembered || len(a.buckets) >= maxRemembered {
		return messages.ErrCodeUnavailable, "too many recent requests"
	}
	if r := e.cfg.RequestRate; r > 0 {
		b := a.buckets[req.ClientID]
		if b == nil {
			b = &rateBucket{tokens: float64(e.cfg.RequestBurst), last: now}
			a.buckets[req.ClientID] = b
		}
		b.tokens = min(float64(e.cfg.RequestBurst), b.tokens+now.Sub(b.last).Seconds()*r)
		b.last = now
		if b.tokens < 1 {
			return messages.ErrCodeUnavailable, "request rate over the exit's limit for this client; retry later"
		}
		b.tokens--
	}
	a.seen[req.SessionID] = time.UnixMilli(req.Timestamp).Add(replayWindow)
	a.inserted++
	if n := e.cfg.MaxSessionsPerClient; n > 0 && a.perConn[req.ClientID] >= n {
		return messages.ErrCodeLimited, "client holds too many sessions on this exit"
	}
	a.perConn[req.ClientID]++
	return "", ""
}

// releaseClient gives back one session of clientID (granted or failed to set up).
func (e *exitActor) releaseClient(clientID string) {
	if e.adm.perConn[clientID]--; e.adm.perConn[clientID] <= 0 {
		delete(e.adm.perConn, clientID)
	}
}

// admits: an open exit admits any signed client; otherwise allowed_clients and operator-certified ones.
func (e *exitActor) admits(req *messages.SessionRequest, now time.Time) bool {
	if e.cfg.Open {
		return true
	}
	for _, id := range e.cfg.AllowedClients {
		if id == req.ClientID {
			return true
		}
	}
	return signaling.CertifiedClient(req.ClientID, req.Certificate, e.cfg.Operators, now)
}

// maybeSweep forgets expired request ids and full rate buckets, at most once per 1024 insertions.
func (a *admission) maybeSweep(now time.Time) {
	if a.inserted < 1024 && len(a.seen) < maxRemembered {
		return
	}
	a.inserted = 0
	for id, until := range a.seen {
		if now.After(until) {
			delete(a.seen, id)
		}
	}
	for id, b := range a.buckets {
		if now.Sub(b.last) > rateBucketIdle {
			delete(a.buckets, id)
		}
	}
}

// answerPing: the asked sessions held for the pinging client. A ping no newer than the last one for
// any of them is a replay, and is refused whole; otherwise each known session records its time,
// and counts as active for the idle sweep: its client, which signed the ping, is alive.
func (e *exitActor) answerPing(m *sessionsPinged) *sessionsPong {
	known := make([]string, 0, len(m.sessionIDs))
	for _, id := range m.sessionIDs {
		s := e.sessions[id]
		if s == nil || s.clientID != m.clientID {
			continue
		}
		if m.ts <= s.lastPing {
			return &sessionsPong{err: &signaling.WireError{Code: messages.ErrCodeReplayed, Message: "ping older than the last one"}}
		}
		known = append(known, id)
	}
	now := time.Now()
	for _, id := range known {
		s := e.sessions[id]
		s.lastPing, s.lastActive = m.ts, now
	}
	return &sessionsPong{known: known}
}

// forgedGoodbye drops a goodbye signed by someone other than the session's client.
func (e *exitActor) forgedGoodbye(c *messages.SessionClose, why string) {
	e.cfg.Stats.Forged.Add(1)
	e.cfg.Logger.Warn("client goodbye dropped", "session", c.SessionID, "signer", c.Signer, "reason", why)
}

// GetExitStatus asks the exit for its session and address counts; the reply is *ExitStatus.
type GetExitStatus struct{}

// ExitStatus answers GetExitStatus.
type ExitStatus struct {
	Sessions       int // granted and alive
	Pending        int // being set up
	AddressesUsed  int // tunnel addresses taken (the exit's own and static peers' included)
	AddressesTotal int // usable addresses of the subnet (capped at 2^20)
	Clients        int // distinct client identities holding sessions
	Flows          int // forwarded connections open (as the exit counts them: announced, and what a drain waits for)
	Draining       bool
}

func (e *exitActor) status() *ExitStatus {
	bits := e.cfg.Subnet.Addr().BitLen() - e.cfg.Subnet.Bits()
	total := 1 << min(bits, 20)
	if e.cfg.Subnet.Addr().Is4() && bits >= 2 {
		total -= 2 // network and broadcast
	}
	return &ExitStatus{Sessions: len(e.sessions), Pending: len(e.pending), AddressesUsed: len(e.used),
		AddressesTotal: total, Clients: len(e.adm.perConn), Flows: max(e.flows, 0), Draining: e.draining && !e.stopping}
}
