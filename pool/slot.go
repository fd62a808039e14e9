package pool

// The slot actor holds one of its pool's fixed ports (SOCKS5, and HTTP if configured) with one
// tunnel behind them, on the exit its pool chose. It opens, moves and replaces that tunnel as the
// pool says (place), steers it (TunnelConfig.Steer: it hears the tunnel's transitions and its exit's
// drain), and reports every transition to the pool and, as an event, to the engine.
//
//	waiting ──place(exit)──▶ opening ──tunnel Up──▶ up ──place(exit)──▶ moving ──switched──▶ up
//	   ▲                        │                    │                    └──refused: up on the old exit (asks again)
//	   └──failed: asks again────┘                    ├──place while the tunnel reconnects (its exit is lost) ──▶
//	                                                 │     replacing: tunnel closed at once ──closed──▶ opening (same ports)
//	                                                 ├──tunnel Reconnecting, or its exit drains: asks for another exit
//	                                                 └──tunnel gone (it panicked): waiting (asks again)
//	any ──closeSlot(drain)──▶ closing: the tunnel drains and closes ──closed──▶ stop
//	any ──release──▶ stop, the tunnel left to the engine (it shuts down and closes it with a drain)
//	Stopping: a tunnel still held is closed at once (fire and forget); one whose open the engine had
//	not yet confirmed (its reply later than openWait, 30 s) is not known to the slot.
//
// A place that arrives while the slot is opening, moving or replacing waits (the newest only) until
// the slot is up or waiting again; one that arrives while it closes is dropped. The tunnel itself is the engine actor's child (so
// that the engine's shutdown drains it with the others); the slot owns it in every other sense.

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

// place tells a slot which exit to be on; why is recorded in its transition.
type place struct {
	exit string
	why  string
	gen  uint64 // the pool's placement number, echoed in the report that ends it
	wg   *wgMap // the WireGuard exits' configurations the tunnel must know (nil: the template's)
}

// closeSlot drains the slot's tunnel (drain; 0: its configured drain timeout; negative: none) and
// stops the slot.
type closeSlot struct{ drain time.Duration }

// release stops the slot without closing its tunnel (the engine shuts down and closes it).
type release struct{}

// slotReport tells the pool of a slot's transition. need says the slot wants another exit (its
// exit failed, was lost or drains); avoid names the exit it should not be placed on again soon.
type slotReport struct {
	index   int
	state   messages.SlotState
	exit    string // the exit it is on, or opening or moving to
	tunnel  *actor.PID
	upSince time.Time
	need    bool
	avoid   string
	cause   string
	gen     uint64 // the placement this report ends, if any
	// exitFailed: avoid's data plane failed (the tunnel reconnects for data_plane or start, or a
	// leg to it did not come up: exitFailed), not this side; upFor is how long the tunnel had been
	// up on it (0 if it never was).
	exitFailed bool
	upFor      time.Duration
}

// exitFailed reports whether a leg's error says that its exit did not answer (no handshake in
// time, or an endpoint that does not resolve) or does not forward (its check failed) rather
// than that this side failed.
func exitFailed(err error) bool {
	return errors.Is(err, actors.ErrHandshakeTimeout) || errors.Is(err, actors.ErrEndpointUnresolved) || errors.Is(err, actors.ErrCheckFailed)
}

type slotConfig struct {
	pool      string
	index     int
	socks     string // fixed listen addresses ("" if the pool has no such range)
	http      string
	template  actors.TunnelConfig
	engine    *actor.PID // opens the tunnels; hears the slot's events
	openWait  time.Duration
	switchCap time.Duration
	logger    *slog.Logger
}

type slotActor struct {
	cfg      slotConfig
	behavior actor.Behavior
	state    messages.SlotState
	tunnel   *actor.PID // alive until it terminates; nil when the slot holds none
	tstate   messages.TunnelState
	exit     string // the exit the tunnel is on (or opening on)
	target   string // while moving or replacing: the exit it goes to
	gen      uint64 // the placement under way
	upSince  time.Time
	opened   int                 // tunnels opened, for their ids
	tc       actors.TunnelConfig // the current tunnel's configuration, as opened or last updated
	tunnelWG *wgMap              // the WireGuard exits tc has
	targetWG *wgMap              // while replacing: those the new tunnel gets
	next     *place
	closing  *closeSlot
	released bool
}

func newSlot(cfg slotConfig) actor.Producer {
	return func() actor.Actor {
		s := &slotActor{cfg: cfg, behavior: actor.NewBehavior(), state: messages.SlotWaiting}
		s.behavior.Become(s.waiting)
		return s
	}
}

func (s *slotActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *release:
		s.released = true
		ctx.Stop(ctx.Self())
		return
	case *actor.Stopping:
		if s.tunnel != nil && !s.released {
			ctx.Request(s.tunnel, &messages.CloseTunnel{Reason: "pool slot stopped", Drain: -1, Why: messages.EndTunnelClosed})
		}
		return
	case *messages.TunnelStateChanged:
		if s.tunnel == nil || m.TunnelID != s.tunnelID() {
			return // an earlier tunnel of this slot
		}
		s.tstate = m.To
	case *actor.Terminated:
		if s.tunnel != nil && m.Who.Equal(s.tunnel) {
			s.tunnel, s.tstate = nil, ""
		} else {
			return
		}
	}
	s.behavior.Receive(ctx)
}

func (s *slotActor) tunnelID() string {
	return fmt.Sprintf("%s-%d-%d", s.cfg.pool, s.cfg.index, s.opened)
}

// enter records a transition and reports it to the pool (the slot's parent) and the engine.
func (s *slotActor) enter(ctx actor.Context, to messages.SlotState, exit, cause string, need bool, avoid string, ended uint64) {
	s.enterReport(ctx, &slotReport{state: to, exit: exit, need: need, avoid: avoid, cause: cause, gen: ended})
}

// enterReport is enter with the whole report (index, tunnel and upSince are filled in).
func (s *slotActor) enterReport(ctx actor.Context, r *slotReport) {
	from, to, exit, cause, need := s.state, r.state, r.exit, r.cause, r.need
	s.state = to
	r.index, r.tunnel, r.upSince = s.cfg.index, s.tunnel, s.upSince
	ctx.Send(ctx.Parent(), r)
	if from != to || need {
		ctx.Send(s.cfg.engine, &messages.SlotStateChanged{Pool: s.cfg.pool, Slot: s.cfg.index, TunnelID: s.tunnelID(),
			ExitID: exit, From: from, To: to, Cause: cause, At: time.Now()})
	}
	if from != to {
		s.cfg.logger.Debug("slot", "slot", s.cfg.index, "from", from, "to", to, "exit", exit, "cause", cause)
	}
}

// settled: waiting or up. A place or close that waited is taken now.
func (s *slotActor) settled(ctx actor.Context) {
	if c := s.closing; c != nil {
		s.closing = nil
		s.close(ctx, c)
		return
	}
	if p := s.next; p != nil {
		s.next = nil
		ctx.Send(ctx.Self(), p)
	}
}

func (s *slotActor) waiting(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *place:
		s.open(ctx, m)
	case *closeSlot:
		s.close(ctx, m)
	}
}

// open asks the engine for a tunnel to p.exit on the slot's ports.
func (s *slotActor) open(ctx actor.Context, p *place) {
	s.opened++
	s.exit, s.gen = p.exit, p.gen
	tc := s.cfg.template
	tc.ID, tc.ExitID, tc.SOCKSAddr, tc.HTTPAddr = s.tunnelID(), p.exit, s.cfg.socks, s.cfg.http
	tc.ReplyTo, tc.Steer = ctx.Self(), ctx.Self()
	if p.wg != nil {
		tc.WireGuard = p.wg.m
	}
	s.tc, s.tunnelWG = tc, p.wg
	s.behavior.Become(s.opening)
	s.enter(ctx, messages.SlotOpening, p.exit, p.why, false, "", 0)
	f := ctx.RequestFuture(s.cfg.engine, &actors.OpenTunnel{Config: tc}, s.cfg.openWait)
	seq := s.opened
	actors.Reenter(ctx, f, func(res any, err error) {
		sp, _ := res.(*actors.TunnelSpawned)
		if s.opened != seq || s.state != messages.SlotOpening { // it answered, failed, before this
			if sp != nil && sp.PID != nil {
				ctx.Request(sp.PID, &messages.CloseTunnel{Reason: "pool: open abandoned", Drain: -1, Why: messages.EndTunnelClosed})
			}
			return
		}
		if err == nil && sp != nil && sp.Err != nil {
			err = sp.Err
		}
		if err == nil && (sp == nil || sp.PID == nil) {
			err = fmt.Errorf("engine spawned no tunnel")
		}
		if err != nil {
			s.failed(ctx, fmt.Errorf("open tunnel: %w", err))
			return
		}
		s.tunnel = sp.PID
		ctx.Watch(sp.PID)
	})
}

// openGone: the tunnel of open seq stopped. Its Terminated (a system message) overtakes the
// OpenTunnelResponse it sent as it stopped, whose error says why; the open fails once that answer
// has had its turn.
type openGone struct{ seq int }

func (s *slotActor) opening(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.OpenTunnelResponse:
		if m.Info.ID != s.tunnelID() && (m.Err == nil || m.Info.ID != "") {
			return // an earlier open's, answered late
		}
		if m.Err != nil {
			s.failed(ctx, m.Err) // the tunnel released everything before it answered, and stops
			return
		}
		s.upSince = time.Now()
		s.behavior.Become(s.up)
		s.enter(ctx, messages.SlotUp, s.exit, "tunnel up", false, "", s.gen)
		s.settled(ctx)
	case *actor.Terminated:
		ctx.Send(ctx.Self(), &openGone{seq: s.opened})
	case *openGone:
		if m.seq == s.opened {
			s.failed(ctx, fmt.Errorf("tunnel stopped while opening"))
		}
	case *place:
		s.next = m
	case *closeSlot:
		s.closing = m
	}
}

// failed: the tunnel did not come up on s.exit; the slot waits for another exit.
func (s *slotActor) failed(ctx actor.Context, err error) {
	if s.tunnel != nil {
		ctx.Unwatch(s.tunnel)
		s.tunnel = nil
	}
	bad := s.exit
	s.exit = ""
	s.behavior.Become(s.waiting)
	s.enterReport(ctx, &slotReport{state: messages.SlotWaiting, exit: bad, cause: err.Error(), need: true, avoid: bad, gen: s.gen,
		exitFailed: exitFailed(err)})
	s.settled(ctx)
}

func (s *slotActor) up(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *place:
		s.move(ctx, m)
	case *closeSlot:
		s.close(ctx, m)
	case *messages.TunnelStateChanged:
		if m.To == messages.StateReconnecting && m.From != messages.StateReconnecting {
			s.enterReport(ctx, &slotReport{state: messages.SlotUp, exit: s.exit, cause: "tunnel reconnecting: " + m.Cause, need: true, avoid: s.exit,
				exitFailed: m.Reconnect == messages.ReconnectDataPlane || m.Reconnect == messages.ReconnectStart, upFor: time.Since(s.upSince)})
		}
	case *messages.TunnelExitDraining:
		if m.ExitID == s.exit {
			s.enter(ctx, messages.SlotUp, s.exit, "exit draining", true, s.exit, 0)
		}
	case *actor.Terminated: // the tunnel stopped on its own (it panicked, or failed for good)
		lost := s.exit
		s.exit = ""
		s.behavior.Become(s.waiting)
		s.enter(ctx, messages.SlotWaiting, lost, "tunnel stopped", true, "", 0)
	}
}

// move switches the tunnel to p.exit make-before-break; a tunnel that is reconnecting (its exit is
// lost) cannot switch and is replaced instead.
func (s *slotActor) move(ctx actor.Context, p *place) {
	s.target, s.gen = p.exit, p.gen
	if s.tstate == messages.StateReconnecting {
		s.replace(ctx, p)
		return
	}
	if p.wg != nil && p.wg != s.tunnelWG { // the tunnel must know the exit's configuration before it switches
		s.tc.WireGuard, s.tunnelWG = p.wg.m, p.wg
		ctx.Request(s.tunnel, &actors.UpdateTunnel{Config: s.tc}) // taken before the switch (one sender, in order); its answer is ignored
	}
	s.behavior.Become(s.moving)
	s.enter(ctx, messages.SlotMoving, p.exit, p.why, false, "", 0)
	f := ctx.RequestFuture(s.tunnel, &messages.SwitchTunnel{ExitID: p.exit}, s.cfg.switchCap)
	actors.Reenter(ctx, f, func(res any, err error) {
		r, _ := res.(*messages.SwitchTunnelResponse)
		if err == nil && r != nil {
			err = r.Err
		}
		if s.state != messages.SlotMoving {
			return // the tunnel went away meanwhile
		}
		if err != nil {
			// Busy: the tunnel is reconnecting (the slot runs one switch at a time, and nothing else
			// switches or reconfigures its tunnel) — its exit is lost, whatever its state event said.
			if s.tstate == messages.StateReconnecting || errors.Is(err, actors.ErrBusy) {
				s.replace(ctx, p)
				return
			}
			s.behavior.Become(s.up)
			s.enterReport(ctx, &slotReport{state: messages.SlotUp, exit: s.exit, cause: fmt.Sprintf("switch to %s: %v", p.exit, err),
				need: true, avoid: p.exit, gen: s.gen, exitFailed: exitFailed(err)})
			s.settled(ctx)
			return
		}
		s.exit, s.upSince = p.exit, time.Now()
		s.behavior.Become(s.up)
		s.enter(ctx, messages.SlotUp, s.exit, "moved: "+p.why, false, "", s.gen)
		s.settled(ctx)
	})
}

func (s *slotActor) moving(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *place:
		s.next = m
	case *closeSlot:
		s.closing = m
	case *actor.Terminated:
		s.exit = ""
		s.behavior.Become(s.waiting)
		s.enter(ctx, messages.SlotWaiting, "", "tunnel stopped while moving", true, "", s.gen)
		s.settled(ctx)
	}
}

// replace closes the tunnel at once (its exit is lost: its connections are dead already) and opens
// a new one on the same ports to p.exit.
func (s *slotActor) replace(ctx actor.Context, p *place) {
	s.behavior.Become(s.replacing)
	s.enter(ctx, messages.SlotReplacing, p.exit, p.why, false, "", 0)
	ctx.Request(s.tunnel, &messages.CloseTunnel{Reason: "pool: replaced (" + p.why + ")", Drain: -1, Why: messages.EndTunnelClosed})
	s.target, s.targetWG = p.exit, p.wg
}

func (s *slotActor) replacing(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Terminated: // closed, listeners released: the ports are free again
		if s.closing != nil {
			ctx.Stop(ctx.Self())
			return
		}
		s.open(ctx, &place{exit: s.target, why: "replaced", gen: s.gen, wg: s.targetWG})
	case *place:
		s.target, s.targetWG = m.exit, m.wg // not opened yet: go there instead
		s.gen = m.gen
	case *closeSlot:
		s.closing = m
	}
}

// close drains and closes the tunnel, then stops the slot.
func (s *slotActor) close(ctx actor.Context, c *closeSlot) {
	s.behavior.Become(s.closingState)
	s.enter(ctx, messages.SlotClosing, s.exit, "slot removed", false, "", 0)
	if s.tunnel == nil {
		ctx.Stop(ctx.Self())
		return
	}
	ctx.Request(s.tunnel, &messages.CloseTunnel{Reason: "pool: slot removed", Drain: c.drain})
}

func (s *slotActor) closingState(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Terminated:
		if s.tunnel == nil {
			ctx.Stop(ctx.Self())
		}
	case *closeSlot: // again, shorter (Pool.Close ran out of time): the tunnel's drain shortens
		if s.tunnel != nil {
			ctx.Request(s.tunnel, &messages.CloseTunnel{Reason: "pool: slot removed", Drain: m.drain})
		}
	}
}
