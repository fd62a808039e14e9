package actors

// Timers of the actors package, named after the event each one stands for, and the package's
// durations. A timer sends its event to its owner's mailbox and is stopped by its owner when the
// state it belongs to ends, and in Stopping; nothing else sends these messages.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The package's fixed durations; everything else comes from configuration.
const (
	// pingReplyGrace: a keepalive's wait for signaling's answer to a ping outlasts the ping's own
	// timeout by this much, so signaling's answer (even a timeout) always arrives first.
	pingReplyGrace = time.Second
)

// sendAfter arms a timer that sends msg to the calling actor after d. The caller owns the timer.
func sendAfter(ctx actor.Context, d time.Duration, msg any) *time.Timer {
	system, self := ctx.ActorSystem(), ctx.Self()
	return time.AfterFunc(d, func() { system.Root.Send(self, msg) })
}

func stopTimers(ts ...*time.Timer) {
	for _, t := range ts {
		if t != nil {
			t.Stop()
		}
	}
}

// legTimers are a leg's: setup sends legSetupExpired (session request and first handshake took
// too long), drain sends legDrainExpired (a draining leg's connections had their time).
type legTimers struct{ setup, drain *time.Timer }

func (t *legTimers) stopAll() { stopTimers(t.setup, t.drain) }

// rearm stops *t if it is armed and arms it again: at most one timer of its kind is pending.
func rearm(t **time.Timer, ctx actor.Context, d time.Duration, msg any) {
	if *t != nil {
		(*t).Stop()
	}
	*t = sendAfter(ctx, d, msg)
}

// kaTick: time for the keepalive's next data-plane check; kaSigTick: time for its next
// session.ping. Each carries the generation it was armed for (keepalive.go).
type kaTick struct{ gen int }
type kaSigTick struct{ gen int }

// keepaliveTimers are the keepalive's two cadences; both stopped on every new leg and in Stopping.
type keepaliveTimers struct{ checkT, pingT *time.Timer }

func (t *keepaliveTimers) check(ctx actor.Context, d time.Duration, gen int) {
	rearm(&t.checkT, ctx, d, &kaTick{gen: gen})
}

func (t *keepaliveTimers) ping(ctx actor.Context, d time.Duration, gen int) {
	rearm(&t.pingT, ctx, d, &kaSigTick{gen: gen})
}

func (t *keepaliveTimers) stopAll() {
	stopTimers(t.checkT, t.pingT)
	t.checkT, t.pingT = nil, nil
}
