package actors

// The health hub's signaling half (health_hub.go): every policy.SignalingInterval one signed
// sessions.ping per messages.MaxPingSessions legs of a group asks the exit which of its sessions it
// still holds. For each leg asked:
//
//	known                         ──▶ sigFails = 0; signalingHealth{ok} if it was failing
//	not known (the exit forgot it) ──▶ sessionLost; the leg is dropped
//	no valid answer               ──▶ sigFails + 1; at policy.SignalingFailures signalingHealth{!ok}
//
// nats.go's disconnect counts as SignalingFailures failures at once for every leg, and answers to
// pings sent before it no longer count; a reconnect pings every group at once. At most one ping
// round per group is in flight; a ping of it not answered within its timeout and pingReplyGrace is
// given up (the legs it asked about fail this ping). Without signaling (the engine lost it) every
// ping fails.

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// pingRound is one ping of a group in flight. All of a group's pings in flight belong to its current
// round: a round is sent only when none is out, or after the last one was given up (forget).
type pingRound struct {
	g     *pathGroup
	epoch int // h.natsEpoch when it was sent
}

var (
	errPingUnanswered = errors.New("signaling did not answer the ping")
	errNoSignaling    = errors.New("the engine has no signaling")
)

func (h *healthHub) ping(ctx actor.Context, g *pathGroup) {
	p := g.key.policy
	stopTimers(g.pingT)
	g.pingT = sendAfter(ctx, p.SignalingInterval, &hubPingTick{g: g})
	if g.pinging > 0 {
		if time.Since(g.pingSince) < p.SignalingTimeout+pingReplyGrace {
			return // the last round is still within its time
		}
		for _, req := range h.forget(g) {
			for _, id := range req.sessionIDs {
				if w := g.legs[id]; w != nil {
					h.signalingResult(ctx, w, errPingUnanswered)
				}
			}
		}
	}
	g.pingSince = time.Now()
	ids := make([]string, 0, min(len(g.legs), messages.MaxPingSessions))
	send := func() {
		req := &pingSessions{exitID: g.key.exitID, exitIdentity: g.key.exitIdentity, sessionIDs: ids, timeout: p.SignalingTimeout}
		if h.signaling == nil {
			for _, id := range ids {
				h.signalingResult(ctx, g.legs[id], errNoSignaling)
			}
			return
		}
		h.pings[req] = &pingRound{g: g, epoch: h.natsEpoch}
		g.pinging++
		ctx.Request(h.signaling, req)
	}
	for id := range g.legs {
		ids = append(ids, id)
		if len(ids) == messages.MaxPingSessions {
			send()
			ids = make([]string, 0, min(len(g.legs), messages.MaxPingSessions))
		}
	}
	if len(ids) > 0 {
		send()
	}
}

// forget drops the group's pings in flight and returns them: their answers, should they come, are
// ignored.
func (h *healthHub) forget(g *pathGroup) []*pingSessions {
	var gone []*pingSessions
	for req, r := range h.pings {
		if r.g == g {
			delete(h.pings, req)
			gone = append(gone, req)
		}
	}
	g.pinging = 0
	return gone
}

func (h *healthHub) pinged(ctx actor.Context, m *pingReply) {
	r := h.pings[m.req]
	if r == nil {
		return // given up, or its group is gone
	}
	delete(h.pings, m.req)
	g := r.g
	if !h.live(g) {
		return
	}
	g.pinging--
	if r.epoch != h.natsEpoch {
		return // sent before NATS disconnected: it says nothing about signaling now
	}
	for _, id := range m.req.sessionIDs {
		w := g.legs[id]
		switch {
		case w == nil:
		case m.err != nil:
			h.signalingResult(ctx, w, m.err)
		case m.known[id]:
			h.signalingResult(ctx, w, nil)
		default:
			h.verdict(ctx, w, &sessionLost{sessionID: id})
			h.drop(ctx, w) // the tunnel decides what comes next; a new leg is registered afresh
		}
	}
}

func (h *healthHub) signalingResult(ctx actor.Context, w *watched, err error) {
	if err == nil {
		w.sigFails = 0
		h.report(ctx, w, true, "signaling answers")
		return
	}
	w.sigFails++
	if w.sigFails >= w.policy.SignalingFailures {
		h.report(ctx, w, false, fmt.Sprintf("%d signaling pings failed; last: %v", w.sigFails, err))
	}
}

func (h *healthHub) report(ctx actor.Context, w *watched, ok bool, cause string) {
	if ok == w.sigOK {
		return
	}
	w.sigOK = ok
	h.verdict(ctx, w, &signalingHealth{ok: ok, cause: cause})
}

// natsState: a disconnect fails signaling for every leg at once; a reconnect pings every group now
// rather than at its next tick.
func (h *healthHub) natsState(ctx actor.Context, m *NATSState) {
	if !m.Connected {
		h.natsEpoch++
	}
	for _, g := range h.groups {
		if g.key.direct() {
			continue // no signaling
		}
		if !m.Connected {
			for _, w := range g.legs {
				w.sigFails = w.policy.SignalingFailures
				h.report(ctx, w, false, fmt.Sprintf("nats disconnected: %v", m.Err))
			}
			continue
		}
		if g.pinging == 0 {
			h.ping(ctx, g)
		}
	}
}
