package actors

// The exit's end. The engine ends it with endWith(engine_shutdown), or the exit ends itself so once
// a drain is over (exit_drain.go): it announces that it leaves, says goodbye to every client
// session, tells its device endWith (the device ends its peers, each peer its connections, so that
// they record why), and stops once the device has terminated (bounded by childrenEndWait).

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// end ends the exit (once): leave, then endWith(why) to the device; ending waits for it.
func (e *exitActor) end(ctx actor.Context, why messages.EndReason) {
	if e.stopping {
		return
	}
	e.leave(ctx)
	e.endT = endChildren(ctx, why, ctx.Children()) // the device
	e.behavior.Become(e.ending)
	stopWhenEnded(ctx, e.cfg.Logger, len(ctx.Children()), false)
}

// leave starts the exit's end: no new sweep, announcement or session; a last announcement that it
// leaves (the directory's goodbye), and a goodbye to every client session before the peers go, so
// that clients leave Up at once instead of waiting for a handshake or keepalive timeout.
func (e *exitActor) leave(ctx actor.Context) {
	e.stopping = true
	stopTimers(e.sweepT, e.announceT, e.drainT, e.moveT)
	if e.announced {
		e.announce(ctx) // state leaving: stopping is set
	}
	for _, s := range e.sessions {
		c := &messages.SessionClose{SessionID: s.id, Reason: "exit shutting down"}
		e.cfg.Identity.SignSessionClose(c, time.Now())
		ctx.Send(e.cfg.Signaling, &sendExitGoodbye{clientID: s.clientID, close: c})
	}
}

// ending waits for the device told endWith; its peers' Terminated (they are watched) change
// nothing now. Requests are refused: the exit is going away.
func (e *exitActor) ending(ctx actor.Context) {
	if awaitChildren(ctx, e.cfg.Logger) {
		return
	}
	switch ctx.Message().(type) {
	case *sessionRequested:
		ctx.Respond(&sessionGranted{err: &signaling.WireError{Code: messages.ErrCodeUnavailable, Message: "exit shutting down"}})
	case *sessionsPinged:
		ctx.Respond(&sessionsPong{}) // its sessions are ending: the client heard the goodbye
	}
}
