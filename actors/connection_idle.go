package actors

// A connection's inactivity check: its timer, and the allowance for clients that send TCP keep-alive
// probes.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

func (c *connActor) idleInterval() time.Duration {
	return max(min(c.cfg.limits.Idle, c.cfg.limits.KeepaliveIdle)/4, minCadence)
}

// idleCheck runs on the idle timer and re-arms it.
func (c *connActor) idleCheck(ctx actor.Context) {
	if c.pumps == 0 || c.ending {
		return
	}
	now := time.Now()
	total := c.live.in.Load() + c.live.out.Load() + c.live.udp.in.Load() + c.live.udp.out.Load() // empty datagrams count too
	in, out, quiet, ok := segments(c.in)
	switch {
	case total != c.lastTotal:
		c.lastTotal, c.idleSince = total, now
	case ok && quiet && in != c.lastSegsIn && out != c.lastSegsOut:
		// Segments came and went with no bytes while nothing was queued either way: the kernel
		// answered keep-alive probes. (A delayed ACK moves only the received count; zero-window
		// probes and retransmissions happen only with data queued, which quiet rules out.)
		c.keepalive = true
	}
	c.lastSegsIn, c.lastSegsOut = in, out
	limit := c.cfg.limits.Idle
	if c.keepalive && c.cfg.limits.KeepaliveIdle > limit {
		limit = c.cfg.limits.KeepaliveIdle
	}
	if now.Sub(c.idleSince) >= limit {
		c.endGracefully(ctx, messages.EndInactivity)
		return
	}
	c.armIdle(ctx)
}

// armIdle schedules the next idle check on the actor's own timer (protoactor's ReceiveTimeout is
// racy at the pinned commit: asynkron/protoactor-go#1139).
func (c *connActor) armIdle(ctx actor.Context) {
	c.timers.idle = sendAfter(ctx, c.idleInterval(), &connIdleCheck{})
}
