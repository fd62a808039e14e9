package actors

// Timers of the actors package, each named after the event it stands for, and the package's fixed
// durations (everything else comes from configuration). A timer sends its event to its owner's
// mailbox (sendAfter); its owner stops it when the state it belongs to ends, and in Stopping.
// Nothing but a timer sends these events. protoactor's ReceiveTimeout is not used: it is racy at
// the pinned commit (asynkron/protoactor-go#1139).

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The package's fixed durations.
const (
	// Bounds on answers between actors (request–reply through futures).
	serveExitWait  = 5 * time.Second // exit: signaling confirms the exit's subscription
	addPeerWait    = 5 * time.Second // exit: the device adds a session's (or a static) peer
	peerStatsWait  = time.Second     // exit: the device's peer counters, for the idle sweep
	exitPingWait   = 2 * time.Second // signaling: the exit actor's answer to a sessions.ping
	pingReplyGrace = time.Second     // health hub: a ping round unanswered for its timeout and this long is given up
	admitWait      = 5 * time.Second // connection: the tunnel's admission once its handshake is done (within its setup deadline)
	// exitAnswer bounds the exit actor's answer to one session request. Longer than the exit's own
	// bound on adding the peer (addPeerWait): an "unavailable" from signaling must never race a
	// grant the exit still completes, or the client's retry would meet its own request as a replay.
	exitAnswer = 10 * time.Second
	// queueWait: how long a session request waits its turn behind maxInFlight before it is refused
	// "unavailable" (clients retry with backoff).
	queueWait = 3 * time.Second

	// Retries of a session request refused "unavailable" (the exit is busy or rate-limits the
	// client), inside the request's own deadline: doubling from min to max.
	retryUnavailableMin = 50 * time.Millisecond
	retryUnavailableMax = time.Second

	// Releasing.
	childrenEndWait  = 5 * time.Second        // an owner that told its children endWith waits this long for them, then stops anyway
	goodbyeFlushWait = time.Second            // signaling's Stopping flushes goodbyes already published
	refusalLinger    = 500 * time.Millisecond // a refused proxy client has this long to read its reply before the close

	// Windows (not timers): what is older is forgotten.
	exitRespawnWindow = time.Minute // engine: exit losses counted against exitRespawnLimit
	rateBucketIdle    = time.Minute // exit admission: a client's request bucket, once idle this long

	// Floors and steps.
	acceptBackoffMin = 5 * time.Millisecond  // an accept loop's pause after a temporary error, doubling…
	acceptBackoffMax = time.Second           // …up to this
	minCadence       = 10 * time.Millisecond // the fastest idle check or session sweep
	minWait          = time.Millisecond      // the least wait derived from a deadline that is (nearly) past
	logPrecision     = time.Millisecond      // durations in log lines
	rttPrecision     = time.Microsecond      // round trips in causes and log lines

	// Exit directory (directory*.go).
	// drainMoveWindow: a draining exit with no flow open waits this long (at most its
	// drain_timeout) for its clients to move their tunnels before it ends (exit_drain.go).
	drainMoveWindow    = 2 * time.Second
	discoverWindow     = 500 * time.Millisecond // a discovery round takes answers this long
	natsStartLook      = 2 * time.Second        // started without NATS: when the signaling actor logs what nats.go last saw
	directoryLoadEvery = time.Second            // load-only changes: at most one snapshot to watchers this often
	directorySweepMin  = 50 * time.Millisecond  // the sweep looks for silent exits every shortest interval/2, within these bounds
	directorySweepMax  = time.Second
	// directoryMissed: an exit silent for this many of its announced intervals is dropped.
	directoryMissed = 3
)

// sendAfter arms a timer that sends msg to the calling actor after d. The caller owns the timer.
func sendAfter(ctx actor.Context, d time.Duration, msg any) *time.Timer {
	system, self := ctx.ActorSystem(), ctx.Self()
	return time.AfterFunc(d, func() { system.Root.Send(self, msg) })
}

// rearm stops *t if it is armed and arms it again: at most one timer of its kind is pending.
func rearm(t **time.Timer, ctx actor.Context, d time.Duration, msg any) {
	if *t != nil {
		(*t).Stop()
	}
	*t = sendAfter(ctx, d, msg)
}

func stopTimers(ts ...*time.Timer) {
	for _, t := range ts {
		if t != nil {
			t.Stop()
		}
	}
}

// Tunnel (tunnel*.go): its timers are fields of the tunnel actor, stopped in Stopping.
type (
	// tunnelDrainExpired: the drain timeout of a Close ran out; the connections still open end.
	tunnelDrainExpired struct{}
	// reconnectAttempt: the backoff after a failed reconnection attempt has passed; try the next.
	reconnectAttempt struct{}
	// parkExpired: the oldest parked proxy connection has waited reconnect_wait; refuse it.
	parkExpired struct{}
	// childrenEndExpired: childrenEndWait has passed since an owner told its children endWith
	// (tunnel, exit, device, peer).
	childrenEndExpired struct{}
)

// Leg (leg.go).
type (
	// legSetupExpired: the session request and first handshake took longer than the setup deadline.
	legSetupExpired struct{}
	// legDrainExpired: a draining leg's connections had their time; the tunnel ends them.
	legDrainExpired struct{ leg int }
)

// legTimers are a leg's: setup sends legSetupExpired, drain sends legDrainExpired.
type legTimers struct{ setup, drain *time.Timer }

func (t *legTimers) stopAll() { stopTimers(t.setup, t.drain) }

// Health hub (health_hub*.go): hubTick is time for a group's next data-plane round, hubPingTick for
// its next sessions.ping; each names its group, and one of a group that is gone is ignored. A
// group's two timers are stopped when its last leg goes, and in Stopping.
type (
	hubTick     struct{ g *pathGroup }
	hubPingTick struct{ g *pathGroup }
)

// Connection (connection*.go).
type (
	// connIdleCheck: time to look at the connection's byte and segment counters again.
	connIdleCheck struct{}
	// connLifetimeExpired: max_lifetime has passed since the connection opened.
	connLifetimeExpired struct{}
	// connGraceExpired: a graceful end's grace period passed without both sides finishing.
	connGraceExpired struct{}
)

// connTimers are a connection's: idle sends connIdleCheck, lifetime connLifetimeExpired, grace
// connGraceExpired.
type connTimers struct{ idle, lifetime, grace *time.Timer }

func (t *connTimers) stopAll() { stopTimers(t.idle, t.lifetime, t.grace) }

// Exit (exit*.go).
type (
	// sweepSessions: time to release sessions whose client went silent (exit_sessions.go).
	sweepSessions struct{}
	// announceTick: time for the exit's next announcement (exit_announce.go).
	announceTick struct{}
	// exitDrainExpired: the exit's drain timeout ran out; the flows left end (exit_drain.go).
	exitDrainExpired struct{}
	// exitMoveWindowOver: the drain's move window passed: with no flow open, the drain is over.
	exitMoveWindowOver struct{}
)

// Exit directory (directory*.go): its timers are fields of the directory actor, stopped in Stopping.
type (
	// discoverWindowEnded: the discovery round has taken answers for discoverWindow; end it.
	discoverWindowEnded struct{ round int }
	// directorySweep: time to drop exits that missed directoryMissed announcements, and to forget
	// old marks of exits that left.
	directorySweep struct{}
	// directoryLoadDue: directoryLoadEvery has passed since the last snapshot; send the load changes.
	directoryLoadDue struct{}
)
