package actors

// The health hub judges the health of every tunnel of one engine, grouped by exit, so that an idle
// tunnel costs almost nothing (docs/health.md, docs/performance.md). A tunnel's keepalive actor
// registers the leg it watches (watchLeg) and hears the verdicts back (hubVerdict); the hub owns
// the cadences, the probe goroutines and the pings. Legs are grouped by exit, exit identity and
// health policy: the tunnels of one group share the path to the exit and the exit's signaling.
//
// Data plane, every policy.Interval, one round per group:
//
//	read every leg's receive counter ──progress──▶ that leg is proven; failures = 0
//	        └──none──▶ probed this round if it is a suspect (failures > 0), or it sent something
//	                   (a tunnel in use that hears nothing back), or it is among the longest
//	                   unprobed (each idle leg at least every idleProbeSweep), or — when no leg of
//	                   the group showed progress — as the round's witness; the others are spared
//	                   and share the round's verdict
//	round ends (all probes answered, or the next round starts):
//	        a probe that failed: failures + 1 for its leg
//	        nothing in the group proven (no progress, every probe failed): failures + 1 for every
//	        spared leg, which is then a suspect and probed on its own from the next round
//	failures ≥ policy.Failures ──▶ dataPlaneFailed to the leg's keepalive; the leg is dropped
//
// A cut of the whole path to an exit, or of the path of a tunnel in use, is found as fast as when
// every tunnel probed every second; an idle tunnel whose path alone fails, while the others'
// work, within idleProbeSweep more (and as fast as any other once it is used).
//
// Signaling (health_hub_ping.go): one signed sessions.ping per MaxPingSessions legs of a group,
// every policy.SignalingInterval, and nats.go's connection state (watchNATS).
//
// Every timer event and probe result carries its group or leg; one that was dropped meanwhile is
// ignored. Stopping stops the timers, cancels the probes and waits for their goroutines (bounded by
// the probe timeout). If the hub is lost, the engine spawns a fresh one and every tunnel registers
// its current leg with it again (healthHubReplaced).

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// idleProbeSweep: every idle leg is probed on its own at least this often, whatever the group's
// other legs show. It bounds how long a failure of one idle tunnel's path alone can go unseen
// while nobody uses the tunnel. At 1,000 idle tunnels it is about 17 probes a second.
const idleProbeSweep = 60 * time.Second

// watchLeg registers a leg with the hub, replacing whatever watcher watched before.
type watchLeg struct {
	watcher                         *actor.PID // the keepalive; verdicts go to it, tagged gen
	gen                             int
	policy                          HealthPolicy
	exitID, sessionID, exitIdentity string
	traffic                         func() (rx, tx uint64)      // the leg's device counters
	probe                           func(context.Context) error // one probe through the leg
	probeBudget                     time.Duration               // its bound when longer than policy.ProbeTimeout (a WireGuard exit's check)
	sigOK                           bool                        // signaling's health as the tunnel has it now
}

// unwatchLeg drops the watcher's leg, if any.
type unwatchLeg struct{ watcher *actor.PID }

// hubVerdict carries *dataPlaneFailed, *sessionLost or *signalingHealth about generation gen of a
// watcher's leg.
type hubVerdict struct {
	gen    int
	report any
}

// healthHubReplaced tells a tunnel that the engine's hub was lost and replaced.
type healthHubReplaced struct{ hub *actor.PID }

type groupKey struct {
	exitID, exitIdentity string
	policy               HealthPolicy
}

// direct: the group is a WireGuard exit's legs. No signaling: no pings, and NATS's state is not
// theirs. Their probe is a forced handshake: an idle one is probed at most every wgIdleProbeGap,
// and a round in which none is due judges nobody.
func (k groupKey) direct() bool { return IsWireGuardExit(k.exitID) }

// watched is the hub's view of one leg.
type watched struct {
	*watchLeg
	group     *pathGroup
	gone      bool   // dropped: late probe results and ping answers are ignored
	lastRx    uint64 // bytes received, at the last check
	lastTx    uint64 // packets of data sent, at the last check
	failures  int
	urgent    bool // this round: a suspect, or it sent and heard nothing
	probing   bool
	round     int                // of the probe in flight
	cancel    context.CancelFunc // of the probe in flight
	lastProbe time.Time
	sigFails  int
	sigOK     bool // as last reported
}

// pathGroup is one exit's legs with one policy.
type pathGroup struct {
	key          groupKey
	legs         map[string]*watched // by session id
	tickT, pingT *time.Timer         // stopped when the last leg goes, and in Stopping
	round        int
	judged       bool       // this round's verdict was given
	out          int        // probes of this round not answered yet
	proven       bool       // this round: progress on a leg, or a probe answered
	cause        string     // this round's last probe error
	spared       []*watched // idle legs not probed this round
	scratch      []*watched
	pinging      int // pings in flight
	pingSince    time.Time
}

func (g *pathGroup) stop() {
	stopTimers(g.tickT, g.pingT)
	g.tickT, g.pingT = nil, nil
}

type healthHub struct {
	signaling *actor.PID
	logger    *slog.Logger
	groups    map[groupKey]*pathGroup
	watchers  map[string]*watched // by watcher PID id
	pings     map[*pingSessions]*pingRound
	natsEpoch int                // bumped on every disconnect: a ping sent before one does not count after it
	ctx       context.Context    // parent of every probe; cancelled in Stopping
	cancel    context.CancelFunc //
	probes    sync.WaitGroup     // the probe goroutines
}

// NewHealthHubProps: one hub per engine, beside its signaling actor.
func NewHealthHubProps(signaling *actor.PID, logger *slog.Logger) *actor.Props {
	return props(func() actor.Actor {
		return &healthHub{signaling: signaling, logger: logger, groups: map[groupKey]*pathGroup{},
			watchers: map[string]*watched{}, pings: map[*pingSessions]*pingRound{}}
	})
}

// hubProbed is a probe's result; the leg records the round it was started in.
type hubProbed struct {
	w   *watched
	err error
}

func (h *healthHub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.ctx, h.cancel = context.WithCancel(context.Background())
		if h.signaling != nil {
			ctx.Send(h.signaling, &watchNATS{pid: ctx.Self()})
		}
	case *watchLeg:
		h.watch(ctx, m)
	case *unwatchLeg:
		if w := h.watchers[m.watcher.Id]; w != nil {
			h.drop(ctx, w)
		}
	case *hubTick:
		if h.live(m.g) {
			h.round(ctx, m.g)
		}
	case *hubProbed:
		h.probed(ctx, m)
	case *hubPingTick:
		if h.live(m.g) {
			h.ping(ctx, m.g)
		}
	case *pingReply:
		h.pinged(ctx, m)
	case *NATSState:
		h.natsState(ctx, m)
	case *actor.Stopping:
		if h.signaling != nil {
			ctx.Send(h.signaling, &unwatchNATS{pid: ctx.Self()})
		}
		for _, g := range h.groups {
			g.stop()
		}
		h.cancel()
		h.probes.Wait() // bounded: every probe was cancelled, and each is bounded by its ProbeTimeout anyway
	}
}

func (h *healthHub) live(g *pathGroup) bool { return h.groups[g.key] == g }

func (h *healthHub) watch(ctx actor.Context, m *watchLeg) {
	if w := h.watchers[m.watcher.Id]; w != nil {
		h.drop(ctx, w)
	}
	key := groupKey{exitID: m.exitID, exitIdentity: m.exitIdentity, policy: m.policy}
	if g := h.groups[key]; g != nil && g.legs[m.sessionID] != nil {
		h.drop(ctx, g.legs[m.sessionID]) // another watcher's record of the session (it may take the group with it)
	}
	g := h.groups[key]
	if g == nil {
		g = &pathGroup{key: key, legs: map[string]*watched{}, judged: true}
		h.groups[key] = g
		g.tickT = sendAfter(ctx, m.policy.Interval, &hubTick{g: g})
		if !key.direct() {
			g.pingT = sendAfter(ctx, m.policy.SignalingInterval, &hubPingTick{g: g})
		}
	}
	// The leg's first handshake probe has just proved its path: it is the last one due.
	w := &watched{watchLeg: m, group: g, lastProbe: time.Now(), sigOK: m.sigOK}
	w.lastRx, w.lastTx = m.traffic()
	g.legs[m.sessionID] = w
	h.watchers[m.watcher.Id] = w
}

// drop forgets a leg: its probe is cancelled (and no longer awaited by its round), and its group
// goes with its last leg, pings in flight included.
func (h *healthHub) drop(ctx actor.Context, w *watched) {
	if w.gone {
		return
	}
	w.gone = true
	g := w.group
	if w.cancel != nil {
		w.cancel()
	}
	if h.watchers[w.watcher.Id] == w {
		delete(h.watchers, w.watcher.Id)
	}
	if g.legs[w.sessionID] == w {
		delete(g.legs, w.sessionID)
	}
	if !h.live(g) {
		return
	}
	if len(g.legs) == 0 {
		g.stop()
		h.forget(g)
		delete(h.groups, g.key)
		return
	}
	if w.probing && w.round == g.round && !g.judged {
		if g.out--; g.out == 0 {
			h.judge(ctx, g)
		}
	}
}

func (h *healthHub) verdict(ctx actor.Context, w *watched, report any) {
	ctx.Send(w.watcher, &hubVerdict{gen: w.gen, report: report})
}

// round starts a data-plane round of g (see the header).
func (h *healthHub) round(ctx actor.Context, g *pathGroup) {
	h.judge(ctx, g) // a round whose probes have not all answered yet is judged on what came back
	if !h.live(g) {
		return
	}
	p := g.key.policy
	g.tickT = sendAfter(ctx, p.Interval, &hubTick{g: g})
	g.round++
	g.judged, g.proven, g.out, g.cause = false, false, 0, ""
	idle := g.scratch[:0]
	for _, w := range g.legs {
		if w.probing {
			continue
		}
		rx, tx := w.traffic()
		// In use (it had data to send; its own keepalives and handshakes do not count) but
		// answered by nothing: probed this round, like a suspect.
		w.urgent = w.failures > 0 || tx > w.lastTx
		w.lastTx = tx
		if rx > w.lastRx {
			w.lastRx, w.failures, w.urgent, g.proven = rx, 0, false, true
			continue
		}
		if g.key.direct() && !w.urgent && time.Since(w.lastProbe) < wgIdleProbeGap {
			continue // a handshake answered lately: neither probed nor judged this round
		}
		idle = append(idle, w)
	}
	// Suspects and legs in use first, then the longest unprobed.
	slices.SortFunc(idle, func(a, b *watched) int {
		if a.urgent != b.urgent {
			if a.urgent {
				return -1
			}
			return 1
		}
		return a.lastProbe.Compare(b.lastProbe)
	})
	due := int((int64(len(idle))*int64(p.Interval) + int64(idleProbeSweep) - 1) / int64(idleProbeSweep)) // int64: a Duration overflows a 32-bit int
	if !g.proven {
		due = max(due, 1) // a witness for the whole path
	}
	now := time.Now()
	for _, w := range idle {
		switch {
		case w.urgent || due > 0 || now.Sub(w.lastProbe) >= idleProbeSweep:
			if !w.urgent && due > 0 {
				due--
			}
			h.probe(ctx, g, w)
		default:
			g.spared = append(g.spared, w)
		}
	}
	clear(idle)
	g.scratch = idle[:0]
	if g.out == 0 {
		h.judge(ctx, g)
	}
}

// judge gives the round's verdict on the legs it spared: if nothing in the group was proven, each
// of them fails this check too (then, as a suspect, it is probed on its own).
func (h *healthHub) judge(ctx actor.Context, g *pathGroup) {
	if g.judged {
		return
	}
	g.judged = true
	spared := g.spared
	g.spared = g.spared[:0]
	if g.proven {
		clear(spared)
		return
	}
	cause := fmt.Sprintf("nothing received from the exit on any of its %d tunnels; probe through the tunnel: %s", len(g.legs), g.cause)
	if g.cause == "" {
		cause = fmt.Sprintf("nothing received from the exit on any of its %d tunnels", len(g.legs))
	}
	for i, w := range spared {
		spared[i] = nil
		if !w.gone && !w.probing {
			h.failed(ctx, w, cause)
		}
	}
}

func (h *healthHub) probe(ctx actor.Context, g *pathGroup, w *watched) {
	w.probing, w.round = true, g.round
	g.out++
	pctx, cancel := context.WithTimeout(h.ctx, max(g.key.policy.ProbeTimeout, w.probeBudget))
	w.cancel = cancel
	system, self, probe := ctx.ActorSystem(), ctx.Self(), w.probe
	h.probes.Add(1)
	go func() {
		defer h.probes.Done()
		defer cancel()
		err := probe(pctx)
		system.Root.Send(self, &hubProbed{w: w, err: err})
	}()
}

func (h *healthHub) probed(ctx actor.Context, m *hubProbed) {
	w := m.w
	if w.gone {
		return // dropped meanwhile; its probe was cancelled
	}
	g := w.group
	w.probing, w.cancel, w.lastProbe = false, nil, time.Now()
	w.lastRx, w.lastTx = w.traffic() // the probe and its reply are not progress: measure from here
	current := w.round == g.round && !g.judged
	if m.err == nil {
		w.failures = 0
		if current {
			g.proven = true
		}
	} else {
		if current {
			g.cause = m.err.Error()
		}
		h.failed(ctx, w, "probe through the tunnel: "+m.err.Error())
	}
	if current && h.live(g) {
		if g.out--; g.out == 0 {
			h.judge(ctx, g)
		}
	}
}

func (h *healthHub) failed(ctx actor.Context, w *watched, cause string) {
	w.failures++
	h.logger.Debug("data-plane check failed", "session", w.sessionID, "failures", w.failures, "cause", cause)
	if w.failures >= w.policy.Failures {
		h.verdict(ctx, w, &dataPlaneFailed{sessionID: w.sessionID,
			cause: fmt.Sprintf("%d data-plane checks failed in a row; last: %s", w.failures, cause)})
		h.drop(ctx, w)
	}
}
