package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

// TunnelInfo describes a tunnel at one moment.
type TunnelInfo = messages.TunnelInfo

// Tunnel is an open client tunnel. Its methods are safe for concurrent use.
type Tunnel struct {
	e    *Engine
	pid  *actor.PID
	info TunnelInfo // as it was when the tunnel came up
}

// ID names the tunnel.
func (t *Tunnel) ID() string { return t.info.ID }

// SOCKSAddr is the bound address of the tunnel's SOCKS5 proxy ("" if none).
func (t *Tunnel) SOCKSAddr() string { return t.info.SOCKSAddr }

// HTTPAddr is the bound address of the tunnel's HTTP proxy ("" if none).
func (t *Tunnel) HTTPAddr() string { return t.info.HTTPAddr }

// OpenTunnel opens a tunnel to spec.Exit and returns once it is Up: session granted, first
// handshake completed and a probe through the tunnel answered. The proxy listeners are bound
// first, so an address in use fails at once with an error naming it. ctx bounds the whole open.
// spec.Name must not be the name of another of the engine's own tunnels that is not Closed yet
// (ErrTunnelExists); pools' tunnels do not count.
func (e *Engine) OpenTunnel(ctx context.Context, spec TunnelSpec) (*Tunnel, error) {
	cfg, err := e.openable(spec)
	if err != nil {
		return nil, err
	}
	limit := cfg.HandshakeTimeout
	if d := untilDeadline(ctx, limit); d < limit {
		limit = d
	}
	cfg.OpenDeadline, _ = ctx.Deadline()
	return e.spawnTunnel(ctx, cfg, limit+time.Second)
}

// openable checks that the engine runs and resolves spec.
func (e *Engine) openable(spec TunnelSpec) (actors.TunnelConfig, error) {
	if !e.started.Load() || e.pid == nil {
		return actors.TunnelConfig{}, ErrNotStarted
	}
	select {
	case <-e.closed:
		return actors.TunnelConfig{}, ErrEngineClosed
	default:
	}
	return e.tunnelConfig(spec, "tunnel")
}

// spawnTunnel asks the engine actor for one of its own tunnels and waits (up to limit, and ctx)
// for the tunnel's answer to its opener: Up, or for StartTunnel its listeners bound; or failed.
func (e *Engine) spawnTunnel(ctx context.Context, cfg actors.TunnelConfig, limit time.Duration) (*Tunnel, error) {
	up := actor.NewFuture(e.system, limit)
	cfg.ReplyTo = up.PID()
	res, err := e.system.Root.RequestFuture(e.pid, &actors.OpenTunnel{Config: cfg, Named: true}, 5*time.Second).Result()
	if err != nil {
		return nil, fmt.Errorf("open tunnel: %w", err)
	}
	spawned, _ := res.(*actors.TunnelSpawned)
	if spawned != nil && errors.Is(spawned.Err, actors.ErrShuttingDown) {
		return nil, ErrEngineClosed
	}
	if spawned != nil && spawned.Err != nil {
		return nil, fmt.Errorf("open tunnel %s: %w", cfg.ID, spawned.Err)
	}
	if spawned == nil || spawned.PID == nil {
		return nil, ErrEngineClosed
	}
	res, err = await(ctx, up)
	if err != nil { // the tunnel did not answer in time: close it and wait until it has released everything
		_ = (&Tunnel{e: e, pid: spawned.PID, info: TunnelInfo{ID: cfg.ID}}).Close(context.Background(), WithDrainTimeout(0))
		if ctx.Err() != nil {
			return nil, fmt.Errorf("open tunnel %s: %w", cfg.ID, ctx.Err())
		}
		if cfg.KeepTrying { // it did not even bind in time
			return nil, fmt.Errorf("start tunnel %s: %w", cfg.ID, err)
		}
		return nil, fmt.Errorf("open tunnel %s: %w: %w", cfg.ID, ErrHandshakeTimeout, err)
	}
	resp := res.(*messages.OpenTunnelResponse)
	if resp.Err != nil { // sent once the failed tunnel has released everything
		return nil, fmt.Errorf("open tunnel %s: %w", cfg.ID, resp.Err)
	}
	return &Tunnel{e: e, pid: spawned.PID, info: resp.Info}, nil
}

// Info asks the tunnel for its current state. A closed tunnel answers ErrTunnelClosed.
func (t *Tunnel) Info(ctx context.Context) (TunnelInfo, error) {
	res, err := t.e.system.Root.RequestFuture(t.pid, &messages.GetTunnelInfo{}, untilDeadline(ctx, 5*time.Second)).Result()
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return TunnelInfo{}, ErrTunnelClosed
		}
		return TunnelInfo{}, err
	}
	return res.(*messages.TunnelInfoResponse).Info, nil
}

// CloseOption changes how Close closes.
type CloseOption func(*messages.CloseTunnel)

// WithDrainTimeout lets active connections finish for d before they are ended (drain_timeout); d ≤ 0
// closes them at once. Without it, the tunnel's configured drain timeout (default 5 s) applies.
func WithDrainTimeout(d time.Duration) CloseOption {
	return func(c *messages.CloseTunnel) {
		c.Drain = d
		if d <= 0 {
			c.Drain = -1
		}
	}
}

// Close closes the tunnel. It drains first: the proxies refuse new connections at once, and active
// connections may finish within the drain timeout; those still open then are ended gracefully
// (FIN) and reset after the close grace. Then the tunnel says goodbye to its exit and releases its
// listeners, connections, netstack, device and UDP bind, in that order, before Close returns.
// If ctx ends first, the drain is cut short: the connections still open are reset (tunnel_closed)
// and Close waits up to closeForceWait more for the release, then returns ctx's error.
// Closing a closed tunnel is a no-op.
func (t *Tunnel) Close(ctx context.Context, opts ...CloseOption) error {
	msg := &messages.CloseTunnel{Reason: "closed by owner"}
	for _, o := range opts {
		o(msg)
	}
	// The tunnel answers once it has released everything; a dead letter means it already had.
	_, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, msg, untilDeadline(ctx, 2*time.Minute)))
	if err == nil || errors.Is(err, actor.ErrDeadLetter) {
		return nil
	}
	// Out of time: close it again, now, and let it end its connections itself (a stop from here
	// would give them no reason, and overtake the one given).
	now := &messages.CloseTunnel{Reason: "closed by owner: out of time", Drain: -1, Why: messages.EndTunnelClosed}
	_, _ = t.e.system.Root.RequestFuture(t.pid, now, closeForceWait).Result()
	return fmt.Errorf("close tunnel %s: %w", t.info.ID, err)
}

// closeForceWait bounds Close's wait for a tunnel it closed again without a drain: longer than the
// tunnel's own bound on waiting for its connections (5 s), so that it is reached only if the tunnel
// is stuck.
const closeForceWait = 10 * time.Second

// Switch moves the tunnel to exitID, make-before-break: a session and device with the new exit come
// up first; once its handshake completes, new proxy connections go to it (the proxies keep their
// addresses) and the old session drains for the drain timeout, then is released. If the new exit
// cannot be reached, the tunnel stays Up on the old one and Switch returns the error.
func (t *Tunnel) Switch(ctx context.Context, exitID string, opts ...CloseOption) error {
	var c messages.CloseTunnel
	for _, o := range opts {
		o(&c)
	}
	res, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, &messages.SwitchTunnel{ExitID: exitID, Drain: c.Drain}, untilDeadline(ctx, time.Minute)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return ErrTunnelClosed
		}
		return fmt.Errorf("switch tunnel %s: %w", t.info.ID, err)
	}
	if r := res.(*messages.SwitchTunnelResponse); r.Err != nil {
		return fmt.Errorf("switch tunnel %s to %s: %w", t.info.ID, echoValue(exitID), r.Err)
	}
	return nil
}

// Reconfigure renews the tunnel's session with the same exit (fresh keys, and whatever endpoint
// and addresses the exit gives now). The old device, netstack and UDP bind are released before the
// new ones are created; connections on the old session end (tunnel_closed); the proxies keep their
// ports and refuse connections (503 / SOCKS5 0x03) until the new session is up.
func (t *Tunnel) Reconfigure(ctx context.Context) error {
	res, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, &messages.ReconfigureTunnel{}, untilDeadline(ctx, time.Minute)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return ErrTunnelClosed
		}
		return fmt.Errorf("reconfigure tunnel %s: %w", t.info.ID, err)
	}
	if r := res.(*messages.ReconfigureTunnelResponse); r.Err != nil {
		return fmt.Errorf("reconfigure tunnel %s: %w", t.info.ID, r.Err)
	}
	return nil
}

// Stats returns the tunnel's connection counters. Bytes count what its ended connections delivered
// plus what its active ones have so far: they only grow. A closed tunnel answers ErrTunnelClosed.
func (t *Tunnel) Stats(ctx context.Context) (messages.ConnectionStats, error) {
	res, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, &messages.GetStats{}, untilDeadline(ctx, 5*time.Second)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return messages.ConnectionStats{}, ErrTunnelClosed
		}
		return messages.ConnectionStats{}, err
	}
	return res.(*messages.StatsResponse).Stats, nil
}

// ExitAddr is the exit's WireGuard endpoint as the exit announced it.
func (t *Tunnel) ExitAddr() netip.AddrPort { return t.info.ExitEndpoint }

// ErrNotInPlace: Update was asked to change what only a new tunnel applies (its name, proxy
// addresses or health policy); nothing was changed.
var ErrNotInPlace = actors.ErrNotInPlace

// Update gives the tunnel the settings of spec for what follows, without touching what runs:
// connections accepted from then on get its limits, timeouts, proxy authentication and UDP
// association settings; legs started from then on its handshake timeout, UDP bind, keepalive and
// pins; the next reconnection its failover list and backoff (a reconnection under way goes on over the new list); the next
// drain its drain timeout. spec is checked as OpenTunnel checks it (errors name the field under
// "tunnel"); its name may be empty (the tunnel's). Its exit does not move the tunnel: Switch does.
// A change of name, proxy addresses or health policy is refused with ErrNotInPlace and changes
// nothing. A closed tunnel answers ErrTunnelClosed.
func (t *Tunnel) Update(ctx context.Context, spec TunnelSpec) error {
	if spec.Name == "" {
		spec.Name = t.info.ID
	}
	cfg, err := t.e.tunnelConfig(spec, "tunnel")
	if err != nil {
		return err
	}
	res, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, &actors.UpdateTunnel{Config: cfg}, untilDeadline(ctx, 5*time.Second)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return ErrTunnelClosed
		}
		return fmt.Errorf("update tunnel %s: %w", t.info.ID, err)
	}
	if r := res.(*actors.TunnelUpdated); r.Err != nil {
		return fmt.Errorf("update tunnel %s: %w", t.info.ID, r.Err)
	}
	return nil
}
