package actors

// Plain-HTTP proxy connections: the request loop (proxy.ServeForward) runs in one goroutine the
// connection actor owns, in place of the copy loops; its end, auth failures and per-request log lines.

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/proxy"
)

// serveForward runs a plain-HTTP session's request loop in a goroutine the actor owns (counted in
// wg, cancelled through c.cancel: Stopping and an expired grace reset its upstream). It counts
// bytes into the connection's totals as they move and reports once, at the end.
func (c *connActor) serveForward(s *proxy.Session) {
	var loopCtx context.Context
	loopCtx, c.cancel = context.WithCancel(context.Background())
	c.pumps = 1
	c.wg.Add(1)
	system, self := c.system, c.self
	goOn(system, func() {
		defer c.wg.Done()
		err := proxy.ServeForward(loopCtx, s, c.dialForward, &c.live.in, &c.live.out)
		system.Root.Send(self, &forwardDone{err: err})
	})
}

// dialForward dials a later request's origin through the tunnel, bounded like the first dial.
func (c *connActor) dialForward(ctx context.Context, t proxy.Target) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.limits.Setup)
	defer cancel()
	return c.cfg.dialer.DialTCP(ctx, t.Host, t.Port)
}

// forwardEnded: the request loop is over. It has answered the client and closed its upstream;
// both sides end with the loop's reason unless the actor ended them first.
func (c *connActor) forwardEnded(ctx actor.Context, m *forwardDone) {
	c.pumps = 0
	if !c.ending && !c.closedUs {
		why := forwardReason(m.err)
		c.setBoth(why)
		if why == messages.EndAuthFailed {
			c.authFailed(m.err)
		}
	}
	c.closedUs = true
	closeQuietly(c.in)
	ctx.Stop(ctx.Self())
}

// forwardReason maps how a request loop ended to the connection's end reason.
func forwardReason(err error) messages.EndReason {
	switch {
	case err == nil:
		return messages.EndNormal
	case errors.Is(err, proxy.ErrAuth):
		return messages.EndAuthFailed
	case errors.Is(err, proxy.ErrHandshakeTimeout):
		return messages.EndHandshakeTimeout
	case errors.Is(err, proxy.ErrDial):
		return dialReason(proxy.ReplyCodeOf(err))
	case errors.Is(err, proxy.ErrBadRequest), errors.Is(err, proxy.ErrUnsupported):
		return messages.EndProtocolError
	}
	return classify(err)
}

// authFailed logs a failed proxy authentication (the tunnel counts them by end reason).
func (c *connActor) authFailed(err error) {
	c.cfg.logger.Warn("proxy authentication failed", "conn", c.cfg.id, "owner", c.cfg.owner,
		"source", c.source, "proxy", c.cfg.proxyKind.String(), "err", err)
}

// proxyOptions are the connection's proxy options, with OnRequest logging one line per plain-HTTP
// request (from the request loop's goroutine) before calling the configured one.
func (c *connActor) proxyOptions() proxy.Options {
	opts := c.cfg.proxyOpts
	next, logger, id, owner := opts.OnRequest, c.cfg.logger, c.cfg.id, c.cfg.owner
	opts.OnRequest = func(r proxy.RequestLog) {
		lvl := slog.LevelDebug
		if r.Err != nil {
			lvl = slog.LevelInfo
		}
		if !logger.Enabled(context.Background(), lvl) { // no allocation per request when not logged
			if next != nil {
				next(r)
			}
			return
		}
		attrs := []any{"conn", id, "owner", owner, "method", r.Method, "target", "", "status", r.Status,
			"bytes_in", r.BytesIn, "bytes_out", r.BytesOut, "duration", r.Duration.Round(logPrecision)}
		if r.Target.Host != "" {
			attrs[7] = r.Target.String()
		}
		if r.Err != nil {
			attrs = append(attrs, "err", r.Err)
		}
		logger.Log(context.Background(), lvl, "http request", attrs...)
		if next != nil {
			next(r)
		}
	}
	return opts
}
