package actors

// Changing a running tunnel's settings in place (engine.Tunnel.Update, a reload of engine run):
//
//	any state but Closing, Failed, Closed ──UpdateTunnel──▶ the same state, with the new settings
//	   for what follows: connections accepted from then on (limits, timeouts, proxy
//	   authentication and handshake limits), legs started from then on (handshake timeout,
//	   UDP bind, keepalive, trust and pins, certificate, WireGuard exits' configurations), the
//	   next reconnection (failover list,
//	   backoff, reconnect wait) and the next drain (drain timeout)
//	a changed name, proxy address or health policy ──▶ ErrNotInPlace, nothing changed
//
// The exit is not an update's: Switch moves the tunnel (the configured exit stays the first of the
// failover list). Nothing running is touched: connections keep the limits they were accepted
// with, the current leg its session; a reconnection under way goes on over the new failover list,
// from the exit it was about to try.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// ErrNotInPlace: an update changes a setting that only a new tunnel applies (its name, proxy
// addresses or health policy); nothing was changed.
var ErrNotInPlace = errors.New("only a new tunnel applies this change")

// UpdateTunnel gives a tunnel new settings; the reply is *TunnelUpdated.
type UpdateTunnel struct{ Config TunnelConfig }

// TunnelUpdated answers UpdateTunnel.
type TunnelUpdated struct{ Err error }

func (t *tunnelActor) update(ctx actor.Context, m *UpdateTunnel) {
	if t.over() {
		ctx.Respond(&TunnelUpdated{Err: ErrTunnelClosed})
		return
	}
	c := m.Config
	var fixed []string
	for _, f := range []struct {
		name string
		diff bool
	}{
		{"name", c.ID != t.cfg.ID}, {"socks", c.SOCKSAddr != t.cfg.SOCKSAddr},
		{"http", c.HTTPAddr != t.cfg.HTTPAddr}, {"health", c.Health != t.cfg.Health},
	} {
		if f.diff {
			fixed = append(fixed, f.name)
		}
	}
	if len(fixed) > 0 {
		ctx.Respond(&TunnelUpdated{Err: fmt.Errorf("%w: %s", ErrNotInPlace, strings.Join(fixed, ", "))})
		return
	}
	before := t.exits()
	t.cfg.UDPBind, t.cfg.HandshakeTimeout, t.cfg.DrainTimeout = c.UDPBind, c.HandshakeTimeout, c.DrainTimeout
	t.cfg.Conn, t.cfg.MaxConns, t.cfg.MaxConnsPerSource, t.cfg.MaxHandshakes = c.Conn, c.MaxConns, c.MaxConnsPerSource, c.MaxHandshakes
	t.cfg.ProxyOpts, t.cfg.Keepalive, t.cfg.Exits, t.cfg.WireGuard = c.ProxyOpts, c.Keepalive, c.Exits, c.WireGuard
	t.cfg.Backoff, t.cfg.ReconnectWait = c.Backoff, c.ReconnectWait
	t.cfg.Trust, t.cfg.Certificate, t.cfg.UDP = c.Trust, c.Certificate, c.UDP
	if t.state == messages.StateReconnecting && len(t.recon.order) > 0 {
		t.reorder(before)
	}
	t.cfg.Logger.Info("tunnel settings changed in place")
	ctx.Respond(&TunnelUpdated{})
}

// reorder makes a reconnection under way go on over the new failover list: from the exit it was
// about to try (if the list still has it), keeping the attempt count its backoff grows with. An
// exit the reconnection tries that was not on the old list either (the exit a switch took the
// tunnel to, which it lost: failoverOrder put it first) stays, first.
func (t *tunnelActor) reorder(before []string) {
	next := t.recon.order[t.recon.attempt%len(t.recon.order)]
	order := t.exits()
	for _, id := range t.recon.order {
		if !slices.Contains(before, id) && !slices.Contains(order, id) {
			order = append([]string{id}, order...)
		}
	}
	if i := slices.Index(order, next); i >= 0 {
		order = slices.Concat(order[i:], order[:i])
	}
	k := t.recon.attempt % len(order) // so that order[attempt % len] is where it goes on
	t.recon.order = slices.Concat(order[len(order)-k:], order[:len(order)-k])
}
