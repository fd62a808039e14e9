package actors

// How a connection's end is recorded: each side's reason (set once, by the first thing that ends
// it), and the report when the actor has stopped — one log line and ConnectionEnded.

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// setIn and setOut record a side's reason once.
func (c *connActor) setIn(r messages.EndReason) {
	if c.inWhy == "" {
		c.inWhy = r
	}
}

func (c *connActor) setOut(r messages.EndReason) {
	if c.outWhy == "" {
		c.outWhy = r
	}
}

// failIn and failOut record an I/O failure seen on a side. The one exception to "once": a side
// recorded "normal" (it finished sending) whose socket then fails (a write to it is reset) did not
// get everything delivered, so the failure replaces "normal".
func (c *connActor) failIn(r messages.EndReason) {
	if c.inWhy == "" || c.inWhy == messages.EndNormal {
		c.inWhy = r
	}
}

func (c *connActor) failOut(r messages.EndReason) {
	if c.outWhy == "" || c.outWhy == messages.EndNormal {
		c.outWhy = r
	}
}

func (c *connActor) setBoth(r messages.EndReason) { c.setIn(r); c.setOut(r) }

func (c *connActor) report(ctx actor.Context) {
	if c.ping {
		ctx.Request(ctx.Parent(), &pingServed{})
		return
	}
	c.emitOpened(ctx) // stopped during setup: it was a connection all the same
	ev := &messages.ConnectionEnded{Owner: c.cfg.owner, Role: c.cfg.role, ID: c.cfg.id, Source: c.source,
		Target: c.target, Duration: time.Since(c.started), BytesIn: c.live.in.Load(), BytesOut: c.live.out.Load(),
		Incoming: c.inWhy, Outgoing: c.outWhy, Refused: c.refused, Keepalive: c.keepalive}
	lvl := slog.LevelDebug
	if ev.Incoming != messages.EndNormal || ev.Outgoing != messages.EndNormal {
		lvl = slog.LevelInfo
	}
	if c.udp != nil {
		ev.UDP = c.live.udp.counts()
		c.logUDP(lvl, ev)
		ctx.Request(ctx.Parent(), ev)
		emit(ctx, c.cfg.events, ev)
		return
	}
	c.cfg.logger.Log(context.Background(), lvl, "connection ended", "conn", ev.ID, "role", ev.Role, "owner", ev.Owner,
		"source", ev.Source, "target", ev.Target, "duration", ev.Duration.Round(logPrecision),
		"bytes_in", ev.BytesIn, "bytes_out", ev.BytesOut, "incoming", ev.Incoming, "outgoing", ev.Outgoing,
		"keepalive", ev.Keepalive)
	ctx.Request(ctx.Parent(), ev) // Request, not Send: the parent keys its bookkeeping by sender
	emit(ctx, c.cfg.events, ev)
}
