package actors

// The keepalive actor is a tunnel's watcher of its current leg. The judging itself is done by the
// engine's health hub (health_hub.go), for all tunnels at once, so that an idle tunnel costs
// almost nothing; the keepalive registers the leg with it and passes its verdicts on to the
// tunnel, as two separate facts:
//
//   - data plane: is the WireGuard path to the exit carrying packets? → dataPlaneFailed.
//   - signaling: can the exit be reached over NATS, and does it still hold the session?
//     → signalingHealth{ok}; an exit that answers but no longer knows the session (it restarted)
//     → sessionLost, which is a data-plane fact: the tunnel cannot work.
//
//	idle ──monitorLeg──▶ watching ──dataPlaneFailed / sessionLost passed on, or stopMonitoring──▶ idle
//	                      └──monitorLeg (another leg, or the same one with a new hub)──▶ watching (new generation)
//
// Every monitorLeg or stop starts a new generation and tells the hub (watchLeg, unwatchLeg); a
// verdict of an older generation, which may still arrive, is ignored (current). It owns nothing
// but its registration, which it withdraws in Stopping. The tunnel watches it: if it stops without
// being asked to, the tunnel spawns a fresh one (tunnel_health.go).

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// HealthPolicy says how a tunnel judges its health. The defaults detect a dead data plane within
// 5 s: checks every second; the first after the cut may still see packets from before it; then 3
// more checks must probe and fail (1, 2 and 3 s after it), each probe bounded by 750 ms: at worst
// 1 + 3 + 0.75 ≈ 4.75 s after the cut (3.75 s when the first check after the cut already probes).
type HealthPolicy struct {
	Interval          time.Duration // data-plane check period
	ProbeTimeout      time.Duration // one probe through the tunnel
	Failures          int           // failed data-plane checks in a row before Reconnecting
	SignalingInterval time.Duration // session ping period
	SignalingTimeout  time.Duration // one session ping
	SignalingFailures int           // failed pings in a row before Degraded
}

// monitorLeg starts watching a leg (replacing any other).
type monitorLeg struct {
	hub                             *actor.PID                  // the engine's health hub
	traffic                         func() (rx, tx uint64)      // the leg's device counters
	probe                           func(context.Context) error // one probe through the leg
	probeBudget                     time.Duration               // a probe's bound when longer than the policy's (a WireGuard exit's check)
	exitID, sessionID, exitIdentity string                      // exitIdentity signs the pongs (verified when the session was granted)
	sigOK                           bool                        // signaling's health as the tunnel has it now
}

// stopMonitoring stops watching (reconnecting, draining).
type stopMonitoring struct{}

// dataPlaneFailed: the watched leg's data plane failed policy.Failures checks in a row.
type dataPlaneFailed struct {
	sessionID string
	cause     string
}

// sessionLost: the exit answered a ping but no longer holds the session.
type sessionLost struct{ sessionID string }

// signalingHealth reports a change of the signaling signal.
type signalingHealth struct {
	ok    bool
	cause string
}

type keepaliveActor struct {
	policy HealthPolicy
	hub    *actor.PID // where the current leg is registered; nil while idle
	gen    int        // bumped on every monitorLeg/stop: stale verdicts are ignored
}

func newKeepaliveActor(policy HealthPolicy) actor.Producer {
	return func() actor.Actor { return &keepaliveActor{policy: policy} }
}

func (k *keepaliveActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *monitorLeg:
		k.idle(ctx)
		k.hub = m.hub
		ctx.Send(k.hub, &watchLeg{watcher: ctx.Self(), gen: k.gen, policy: k.policy, exitID: m.exitID,
			sessionID: m.sessionID, exitIdentity: m.exitIdentity, traffic: m.traffic, probe: m.probe, probeBudget: m.probeBudget, sigOK: m.sigOK})
	case *stopMonitoring:
		k.idle(ctx)
	case *hubVerdict:
		if m.gen != k.gen || k.hub == nil {
			return // about a leg no longer watched
		}
		ctx.Send(ctx.Parent(), m.report)
		switch m.report.(type) {
		case *dataPlaneFailed, *sessionLost:
			k.gen++ // the hub has dropped the leg; the tunnel decides what comes next
			k.hub = nil
		}
	case *actor.Stopping:
		k.idle(ctx)
	}
}

// idle withdraws the current registration, if any, and starts a new generation.
func (k *keepaliveActor) idle(ctx actor.Context) {
	k.gen++
	if k.hub != nil {
		ctx.Send(k.hub, &unwatchLeg{watcher: ctx.Self()})
		k.hub = nil
	}
}
