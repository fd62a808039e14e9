package actors

// Timers of the actors package, named after the event each one stands for, and the package's
// durations. A timer sends its event to its owner's mailbox and is stopped by its owner when the
// state it belongs to ends, and in Stopping; nothing else sends these messages.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
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
