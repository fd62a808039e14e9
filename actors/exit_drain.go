package actors

// The exit's drain (Engine.DrainExit, Engine.Close, SIGTERM to `engine run`): it admits no session
// any more (requests are refused "draining", which a client takes as final for this exit and tries
// its next one at once), announces draining at once, and tells each client session so with a
// signed session.draining (DrainMS: the time left), so that clients move their tunnels to other
// exits make-before-break while the flows already running here go on.
//
//	Serving ──drainExit──▶ Draining ──no client session left; or no flow open once the move
//	                                  window has passed; or drain_timeout──▶ Ending
//	                                  (endWith(engine_shutdown): leaving announced, goodbyes, the
//	                                  flows left end)
//
// The move window (drainMoveWindow, at most drain_timeout) gives clients time to move their idle
// tunnels make-before-break before the exit goes: a pool moves at most max_moves slots at once. A
// drain with no client session (or no drain configured) ends the exit at once.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// drainExit tells the exit to drain; the engine hears its Terminated once it has drained and ended.
type drainExit struct{}

// flowsChanged tells the exit that forwarded connections opened (delta > 0) or ended (delta < 0);
// each peer reports its own, and those still open when it stops.
type flowsChanged struct {
	delta     int
	sessionID string // the peer's: a client session's id, or "static-" and a static peer's name
}

// drain starts the drain, or ends the exit at once if there is nothing to drain.
func (e *exitActor) drain(ctx actor.Context) {
	if e.cfg.DrainTimeout <= 0 || len(e.sessions) == 0 && len(e.pending) == 0 {
		e.cfg.Logger.Info("exit drain: nothing to drain; ending", "sessions", len(e.sessions), "flows", e.flows)
		e.end(ctx, messages.EndEngineShutdown)
		return
	}
	e.draining = true
	e.drainEnd = time.Now().Add(e.cfg.DrainTimeout)
	e.drainT = sendAfter(ctx, e.cfg.DrainTimeout, &exitDrainExpired{})
	e.moveT = sendAfter(ctx, min(drainMoveWindow, e.cfg.DrainTimeout), &exitMoveWindowOver{})
	e.behavior.Become(e.drainingState)
	e.cfg.Logger.Info("exit draining", "sessions", len(e.sessions), "flows", e.flows, "drain_timeout", e.cfg.DrainTimeout)
	e.announce(ctx) // draining, at once
	for _, s := range e.sessions {
		e.tellDraining(ctx, s)
	}
}

// drainingState is Draining: no session admitted; sessions, pings, goodbyes and flows go on until
// the drain is over.
func (e *exitActor) drainingState(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *sessionRequested:
		ctx.Respond(&sessionGranted{err: &signaling.WireError{Code: messages.ErrCodeDraining, Message: "exit draining: try another exit"}})
		return
	case *exitDrainExpired:
		e.cfg.Logger.Info("exit drain timeout; ending", "sessions", len(e.sessions), "flows", e.flows)
		e.end(ctx, messages.EndEngineShutdown)
		return
	case *drainExit: // a second ask joins the drain under way
		return
	case *exitMoveWindowOver:
		e.moveT, e.moveOver = nil, true
	case *flowsChanged:
	default:
		e.held(ctx)
	}
	if !e.stopping && e.drained() {
		e.cfg.Logger.Info("exit drained", "sessions", len(e.sessions), "flows", e.flows)
		e.end(ctx, messages.EndEngineShutdown)
	}
}

// drained reports whether nothing is left to drain: no client session is held or being set up
// (they moved and said goodbye; static peers, which cannot move, do not hold a drain up), or no
// forwarded flow is open once the move window has passed.
func (e *exitActor) drained() bool {
	return e.flows <= 0 && e.moveOver || len(e.sessions) == 0 && len(e.pending) == 0
}

// tellDraining sends a client session the signed notice of the drain, with the time left.
func (e *exitActor) tellDraining(ctx actor.Context, s *exitSession) {
	d := &messages.SessionDraining{SessionID: s.id, ExitID: e.cfg.ID, DrainMS: max(time.Until(e.drainEnd), 0).Milliseconds()}
	e.cfg.Identity.SignSessionDraining(d, time.Now())
	ctx.Send(e.cfg.Signaling, &sendSessionDraining{clientID: s.clientID, draining: d})
}
