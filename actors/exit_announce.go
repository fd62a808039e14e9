package actors

// The exit's announcements (docs/signaling.md): a signed messages.ExitAnnouncement — who, where,
// labels, capacity, load, state, version, cadence — published on warren.v1.exits.announce by the
// signaling actor every AnnounceInterval while the exit serves or drains, at once on every change
// of state (serving, draining), and a last one as it leaves. The exit owns the cadence's timer
// (stopped as it leaves, and in Stopping). Discovery (warren.v1.exits.discover) is answered with
// a freshly signed one (describeExit, asked by the signaling actor).

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// announce has signaling publish the exit's announcement now (and arms the next, unless leaving).
func (e *exitActor) announce(ctx actor.Context) {
	if e.cfg.AnnounceInterval <= 0 || e.cfg.Identity == nil {
		return
	}
	e.announced = true
	ctx.Send(e.cfg.Signaling, &announce{a: e.announcement(), exit: ctx.Self()})
	if !e.stopping {
		rearm(&e.announceT, ctx, e.cfg.AnnounceInterval, &announceTick{})
	}
}

// describe is a freshly signed announcement for a discovery answer; nil when the exit does not
// announce, has not started serving or is leaving.
func (e *exitActor) describe() *messages.ExitAnnouncement {
	if !e.announced || e.stopping || e.cfg.AnnounceInterval <= 0 {
		return nil
	}
	return e.announcement()
}

// announcement describes the exit now, signed.
func (e *exitActor) announcement() *messages.ExitAnnouncement {
	state := messages.ExitServing
	switch {
	case e.stopping:
		state = messages.ExitLeaving
	case e.draining:
		state = messages.ExitDraining
	}
	a := &messages.ExitAnnouncement{
		ExitID: e.cfg.ID, Certificate: e.cfg.Certificate, Endpoint: e.endpoint.String(), Labels: e.cfg.Labels,
		Capacity: e.capacity, Load: messages.ExitLoad{Sessions: len(e.sessions), Flows: max(e.flows, 0)},
		State: state, Version: messages.SoftwareVersion, IntervalMS: e.cfg.AnnounceInterval.Milliseconds(),
	}
	e.cfg.Identity.SignExitAnnouncement(a, time.Now())
	return a
}
