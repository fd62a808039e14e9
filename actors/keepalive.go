package actors

// The keepalive actor watches one tunnel's current leg and reports two separate facts to the tunnel:
//
//   - data plane: is the WireGuard path to the exit carrying packets? Each interval it reads the
//     device's receive counter; if nothing arrived since the last check it probes (one UDP datagram
//     echoed by the exit through the tunnel). Failures in a row ≥ policy.Failures → dataPlaneFailed.
//   - signaling: can the exit be reached over NATS, and does it still hold the session? A
//     session.ping every SignalingInterval, and nats.go's connection state as messages. Failures in
//     a row ≥ SignalingFailures, or a disconnect → signalingHealth{ok: false}; the next successful
//     ping → signalingHealth{ok: true}. An exit that answers but no longer knows the session
//     (it restarted) → sessionLost, which is a data-plane fact: the tunnel cannot work.
//
//	idle ──monitorLeg──▶ watching ──dataPlaneFailed / sessionLost sent, or stopMonitoring──▶ idle
//	                      └──monitorLeg (another leg)──▶ watching (new generation)
//
// Every monitorLeg or stop starts a new generation: ticks, probe results and replies of an older
// generation, which may still arrive, are ignored (current). Its timers and the probe goroutine
// are its own: stopped in reset, the goroutine awaited in Stopping (bounded by ProbeTimeout).
// The tunnel watches it: if it stops without being asked to, the tunnel spawns a fresh one
// (tunnel_health.go).

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/netstack"
)

// HealthPolicy says how a tunnel judges its health. The defaults detect a dead data plane within
// 5 s: checks every second; the first after the cut may still see packets from before it; then 3
// more checks must probe and fail (1, 2 and 3 s after it), each probe bounded by 750 ms: at worst
// 1 + 3 + 0.75 ≈ 4.75 s after the cut (3.75 s when the first check after the cut already probes).
type HealthPolicy struct {
	Interval          time.Duration // data-plane check period
	ProbeTimeout      time.Duration // one probe through the tunnel
	Failures          int           // failed data-plane checks in a row before Reconnecting
	SignalingInterval time.Duration // session.ping period
	SignalingTimeout  time.Duration // one session.ping
	SignalingFailures int           // failed pings in a row before Degraded
}

// monitorLeg starts watching a leg (replacing any other).
type monitorLeg struct {
	device                          *actor.PID
	dialer                          netstack.Dialer
	exitID, sessionID, exitIdentity string // exitIdentity signs the pongs (verified when the session was granted)
	sigOK                           bool   // signaling's health as the tunnel has it now
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

type kaProbeDone struct {
	gen int
	err error
}

type keepaliveActor struct {
	policy    HealthPolicy
	signaling *actor.PID
	logger    *slog.Logger

	leg      *monitorLeg // nil while idle
	gen      int         // bumped on every monitorLeg/stop: stale ticks and probes are ignored
	lastRx   int64
	failures int
	probing  bool
	sigFails int
	sigOK    bool               // as last reported to the tunnel
	timers   keepaliveTimers    // next data-plane check and next ping; stopped in reset
	cancel   context.CancelFunc // of the probe in flight
	wg       sync.WaitGroup     // the probe goroutine
}

// newKeepaliveActor: sigOK is signaling's health as the tunnel last heard it, so that a keepalive
// spawned in place of a lost one reports a change from there.
func newKeepaliveActor(policy HealthPolicy, signaling *actor.PID, logger *slog.Logger, sigOK bool) actor.Producer {
	return func() actor.Actor {
		return &keepaliveActor{policy: policy, signaling: signaling, logger: logger, sigOK: sigOK}
	}
}

func (k *keepaliveActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Send(k.signaling, &watchNATS{pid: ctx.Self()})
	case *monitorLeg:
		k.reset()
		k.leg, k.lastRx, k.failures, k.sigFails, k.sigOK = m, -1, 0, 0, m.sigOK
		k.timers.check(ctx, k.policy.Interval, k.gen)
		k.timers.ping(ctx, k.policy.SignalingInterval, k.gen)
	case *stopMonitoring:
		k.idle()
	case *kaTick:
		if !k.current(m.gen) {
			return // a tick of a leg no longer watched
		}
		// Fixed cadence: the next check is armed now, not when this one's probe finishes.
		k.timers.check(ctx, k.policy.Interval, k.gen)
		if !k.probing {
			k.checkDataPlane(ctx)
		}
	case *kaProbeDone:
		if !k.current(m.gen) {
			return // the result of a probe on a leg no longer watched
		}
		k.probing = false
		if m.err == nil {
			k.failures = 0
		} else {
			k.failed(ctx, fmt.Sprintf("probe through the tunnel: %v", m.err))
		}
		k.rebase(ctx) // the probe's own reply is not progress: measure from here
	case *kaSigTick:
		if k.current(m.gen) {
			k.ping(ctx)
		}
	case *NATSState:
		if !m.Connected {
			k.sigFails = k.policy.SignalingFailures
			k.report(ctx, false, fmt.Sprintf("nats disconnected: %v", m.Err))
		} else if k.leg != nil { // check at once rather than at the next tick
			ctx.Send(ctx.Self(), &kaSigTick{gen: k.gen})
		}
	case *actor.Stopping:
		ctx.Send(k.signaling, &unwatchNATS{pid: ctx.Self()})
		k.reset()
		k.wg.Wait() // bounded: the probe in flight was cancelled, and is bounded by ProbeTimeout anyway
	}
}

// current reports whether a tick or result of generation gen is about the leg watched now. Every
// late message (ticks, probe results, stats and ping replies) goes through it, so none can act on a
// leg that was replaced or dropped meanwhile.
func (k *keepaliveActor) current(gen int) bool { return gen == k.gen && k.leg != nil }

// idle stops watching: timers stopped, probe cancelled, the leg forgotten.
func (k *keepaliveActor) idle() {
	k.reset()
	k.leg = nil
}

// reset starts a new generation: timers stopped and the probe in flight cancelled (its result, if
// it still comes, is of the old generation and ignored). It never waits: only Stopping waits for
// the probe goroutine.
func (k *keepaliveActor) reset() {
	k.gen++
	k.timers.stopAll()
	if k.cancel != nil {
		k.cancel()
		k.cancel = nil
	}
	k.probing = false
}

// ping asks the exit over signaling whether it still holds the session, and arms the next ping.
func (k *keepaliveActor) ping(ctx actor.Context) {
	gen, sessionID := k.gen, k.leg.sessionID
	f := ctx.RequestFuture(k.signaling, &pingExit{exitID: k.leg.exitID, sessionID: sessionID, exitIdentity: k.leg.exitIdentity, timeout: k.policy.SignalingTimeout},
		k.policy.SignalingTimeout+pingReplyGrace)
	reenter(ctx, f, func(res any, err error) {
		if !k.current(gen) {
			return
		}
		if r, ok := res.(*pingReply); ok {
			err = r.err
			if err == nil && !r.known {
				ctx.Send(ctx.Parent(), &sessionLost{sessionID: sessionID})
				k.idle() // the tunnel decides what comes next; it sends monitorLeg for a new leg
				return
			}
		}
		k.signalingResult(ctx, err)
		k.timers.ping(ctx, k.policy.SignalingInterval, k.gen)
	})
}

// checkDataPlane: receive progress since the last check proves the path; otherwise probe.
func (k *keepaliveActor) checkDataPlane(ctx actor.Context) {
	gen := k.gen
	f := ctx.RequestFuture(k.leg.device, &getPeerStats{}, k.policy.Interval)
	reenter(ctx, f, func(res any, err error) {
		if !k.current(gen) || k.probing {
			return
		}
		st, ok := res.(*peerStats)
		if err == nil && ok && st.err == nil && k.lastRx >= 0 && st.rxBytes > k.lastRx {
			k.lastRx, k.failures = st.rxBytes, 0
			return
		}
		if ok && st.err == nil {
			k.lastRx = st.rxBytes
		}
		k.probe(ctx)
	})
}

// rebase reads the receive counter as the new baseline. It does nothing once the leg is no longer
// watched (a failure that reached policy.Failures has just dropped it).
func (k *keepaliveActor) rebase(ctx actor.Context) {
	if k.leg == nil {
		return
	}
	gen := k.gen
	f := ctx.RequestFuture(k.leg.device, &getPeerStats{}, k.policy.Interval)
	reenter(ctx, f, func(res any, err error) {
		if st, ok := res.(*peerStats); k.current(gen) && err == nil && ok && st.err == nil {
			k.lastRx = st.rxBytes
		}
	})
}

func (k *keepaliveActor) probe(ctx actor.Context) {
	if k.probing {
		return
	}
	k.probing = true
	pctx, cancel := context.WithTimeout(context.Background(), k.policy.ProbeTimeout)
	k.cancel = cancel
	system, self, gen, dialer := ctx.ActorSystem(), ctx.Self(), k.gen, k.leg.dialer
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer cancel()
		err := dialer.PingUDP(pctx)
		system.Root.Send(self, &kaProbeDone{gen: gen, err: err})
	}()
}

func (k *keepaliveActor) failed(ctx actor.Context, cause string) {
	k.failures++
	k.logger.Debug("data-plane check failed", "session", k.leg.sessionID, "failures", k.failures, "cause", cause)
	if k.failures >= k.policy.Failures {
		ctx.Send(ctx.Parent(), &dataPlaneFailed{sessionID: k.leg.sessionID,
			cause: fmt.Sprintf("%d data-plane checks failed in a row; last: %s", k.failures, cause)})
		k.idle() // the tunnel decides what comes next; it sends monitorLeg for a new leg
	}
}

func (k *keepaliveActor) signalingResult(ctx actor.Context, err error) {
	if err == nil {
		k.sigFails = 0
		k.report(ctx, true, "signaling answers")
		return
	}
	k.sigFails++
	if k.sigFails >= k.policy.SignalingFailures {
		k.report(ctx, false, fmt.Sprintf("%d signaling pings failed; last: %v", k.sigFails, err))
	}
}

func (k *keepaliveActor) report(ctx actor.Context, ok bool, cause string) {
	if ok == k.sigOK {
		return
	}
	k.sigOK = ok
	ctx.Send(ctx.Parent(), &signalingHealth{ok: ok, cause: cause})
}
