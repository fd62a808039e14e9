package engine

// The engine's own tunnels as a set: unique names, listing and lookup, StartTunnel (a tunnel that
// keeps trying), and a tunnel's active connections.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
)

// Errors of the engine's tunnel set.
var (
	// ErrTunnelExists: OpenTunnel or StartTunnel with the name of one of the engine's own tunnels
	// that is not Closed yet (pools' tunnels do not count). Wrapped, with the name.
	ErrTunnelExists = actors.ErrTunnelExists
	// ErrTunnelNotFound: Tunnel(name) found none of the engine's own tunnels by that name.
	ErrTunnelNotFound = errors.New("no such tunnel")
)

// ConnInfo describes an active proxied connection of a tunnel (Tunnel.Connections).
type ConnInfo = messages.ConnInfo

// StartTunnel opens a tunnel that keeps trying. It returns once the proxy listeners are bound, and
// they accept from then on (refusing with SOCKS5 0x03 / HTTP 503 until the tunnel is first Up);
// what can fail at once does: a bad spec (a FieldError), an address in use, ErrTunnelExists,
// ErrNotStarted, ErrEngineClosed. A first session that fails (the exit not there yet or
// unreachable, NATS down, refused, a handshake timeout) sends the tunnel to Reconnecting (cause
// class "start") with its backoff, and it tries its exits — spec.Exit, then spec.Exits, in turn —
// until one comes up or it is closed; Events and Info tell how it goes. OpenTunnel, by contrast,
// returns only once the tunnel is Up, and fails with it. ctx bounds the wait for the listeners.
func (e *Engine) StartTunnel(ctx context.Context, spec TunnelSpec) (*Tunnel, error) {
	cfg, err := e.openable(spec)
	if err != nil {
		return nil, err
	}
	cfg.KeepTrying = true
	return e.spawnTunnel(ctx, cfg, untilDeadline(ctx, startWait))
}

// startWait bounds StartTunnel's wait for the tunnel's listeners (binding is immediate; a failure
// is answered once the tunnel has released what it held).
const startWait = 30 * time.Second

// listWait bounds the engine actor's and each tunnel's answer to a listing.
const listWait = 5 * time.Second

// Tunnels returns the engine's own open tunnels (opened with OpenTunnel or StartTunnel, not pool
// slots' tunnels), sorted by ID: every one that is not Closed yet, whatever its state. The engine
// actor answers from its table of names; each tunnel is then asked for its addresses, all at once,
// by the caller (no actor waits on another). A tunnel that closes meanwhile is left out.
func (e *Engine) Tunnels(ctx context.Context) ([]*Tunnel, error) {
	pids, err := e.namedTunnels(ctx, "")
	if err != nil {
		return nil, err
	}
	futures := make([]*actor.Future, len(pids))
	for i, pid := range pids {
		futures[i] = e.system.Root.RequestFuture(pid, &messages.GetTunnelInfo{}, untilDeadline(ctx, listWait))
	}
	out := make([]*Tunnel, 0, len(pids))
	for i, f := range futures {
		res, err := await(ctx, f)
		switch {
		case errors.Is(err, actor.ErrDeadLetter): // closed meanwhile
			continue
		case err != nil:
			return nil, fmt.Errorf("list tunnels: %w", err)
		}
		out = append(out, &Tunnel{e: e, pid: pids[i], info: res.(*messages.TunnelInfoResponse).Info})
	}
	slices.SortFunc(out, func(a, b *Tunnel) int { return strings.Compare(a.ID(), b.ID()) })
	return out, nil
}

// Tunnel returns the engine's own tunnel called name (ErrTunnelNotFound if there is none, or it
// is Closed).
func (e *Engine) Tunnel(ctx context.Context, name string) (*Tunnel, error) {
	pids, err := e.namedTunnels(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("tunnel %s: %w", echoValue(name), ErrTunnelNotFound)
	}
	t := &Tunnel{e: e, pid: pids[0]}
	info, err := t.Info(ctx)
	if errors.Is(err, ErrTunnelClosed) {
		return nil, fmt.Errorf("tunnel %s: %w", echoValue(name), ErrTunnelNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: %w", echoValue(name), err)
	}
	t.info = info
	return t, nil
}

// namedTunnels asks the engine actor for its own tunnels (all, or the one called name).
func (e *Engine) namedTunnels(ctx context.Context, name string) ([]*actor.PID, error) {
	if e.pid == nil {
		return nil, ErrNotStarted
	}
	res, err := await(ctx, e.system.Root.RequestFuture(e.pid, &actors.GetTunnels{Name: name}, untilDeadline(ctx, listWait)))
	if errors.Is(err, actor.ErrDeadLetter) {
		return nil, ErrEngineClosed
	}
	if err != nil {
		return nil, err
	}
	list := res.(*actors.TunnelsList).Tunnels
	pids := make([]*actor.PID, 0, len(list))
	for _, pid := range list {
		pids = append(pids, pid)
	}
	return pids, nil
}

// Connections describes the tunnel's active proxied connections, sorted by ID: the proxy each
// came through, its client's address, its target (once the client said it), since when, the bytes
// it delivered so far each way, and the exit it goes through. Refused connections are not listed.
// A closed tunnel answers ErrTunnelClosed.
func (t *Tunnel) Connections(ctx context.Context) ([]ConnInfo, error) {
	res, err := await(ctx, t.e.system.Root.RequestFuture(t.pid, &messages.GetConnections{}, untilDeadline(ctx, listWait)))
	if err != nil {
		if errors.Is(err, actor.ErrDeadLetter) {
			return nil, ErrTunnelClosed
		}
		return nil, err
	}
	return res.(*messages.ConnectionsResponse).Conns, nil
}
