package engine

// What packages layered on the engine (pool/) need to run their own actors beside the engine's
// tunnels. Not meant for applications: they use OpenTunnel and Tunnel.

import (
	"errors"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// Runtime returns the engine's actor system and engine actor, for a package layered on the engine:
// it starts its actors as children of the engine actor (actors.SpawnChild), which stops them first
// when the engine shuts down, and opens tunnels with actors.OpenTunnel.
func (e *Engine) Runtime() (*actor.ActorSystem, *actor.PID, error) {
	if !e.started.Load() || e.pid == nil {
		return nil, nil, ErrNotStarted
	}
	select {
	case <-e.closed:
		return nil, nil, ErrEngineClosed
	default:
	}
	return e.system, e.pid, nil
}

// TunnelConfig resolves spec as OpenTunnel does (validation with field names under "tunnel",
// defaults, this engine's identity and trust) into the tunnel actor's configuration. The caller
// sets ReplyTo (and may set Steer) before it sends actors.OpenTunnel. For packages layered on the
// engine.
func (e *Engine) TunnelConfig(spec TunnelSpec) (actors.TunnelConfig, error) {
	return e.tunnelConfig(spec, "tunnel")
}

func (e *Engine) tunnelConfig(spec TunnelSpec, path string) (actors.TunnelConfig, error) {
	r, err := spec.resolve(path, 0)
	if err != nil {
		return actors.TunnelConfig{}, err
	}
	if err := e.cfg.checkTunnelTrust(&spec, path); err != nil {
		return actors.TunnelConfig{}, err
	}
	wg := e.WireGuardExits()
	if err := checkWireGuardRefs(&spec, path, wg); err != nil {
		return actors.TunnelConfig{}, err
	}
	if spec.Name == "" {
		r.name = "tunnel-" + randomHex(4)
	}
	return actors.TunnelConfig{ID: r.name, ExitID: spec.Exit, SOCKSAddr: spec.SOCKS, HTTPAddr: spec.HTTP,
		UDPBind: r.udpBind, HandshakeTimeout: r.handshakeTimeout, Conn: r.limits.timeouts(r.connectTimeout), Keepalive: r.keepalive,
		MaxConns: r.maxConns, MaxConnsPerSource: spec.MaxConnectionsPerSource, UDP: r.udp,
		MaxHandshakes: r.handshake.maxPending, ProxyOpts: r.handshake.options(),
		DrainTimeout: orDuration(spec.DrainTimeout, DefaultDrainTimeout),
		Exits:        spec.Exits, WireGuard: wg, Health: r.health, Backoff: r.backoff, ReconnectWait: r.reconnectWait,
		Identity: e.identity, Certificate: e.cfg.Trust.Certificate,
		Trust: signaling.ExitTrust{Pins: spec.Pins, Operators: e.cfg.Trust.Operators,
			// On a private bus (embedded server, no listener) no one else can answer.
			AnyExit: e.cfg.Trust.AnyExit || !e.cfg.NATS.shared()}}, nil
}

// CheckTunnelSpec validates spec as Config.Validate validates a tunnel, naming fields under path.
func CheckTunnelSpec(spec TunnelSpec, path string) error {
	_, err := spec.resolve(path, 0)
	return err
}

// slotEvent turns a pool slot's transition into an Event.
func slotEvent(m *messages.SlotStateChanged) Event {
	return Event{Time: m.At, Kind: EventSlotState, Pool: m.Pool, Slot: m.Slot, Tunnel: m.TunnelID, Exit: m.ExitID,
		SlotFrom: m.From, SlotTo: m.To, Cause: m.Cause}
}

// Logger is the engine's logger, for packages layered on it.
func (e *Engine) Logger() *slog.Logger { return e.logger }

// ErrNoTrustedExits: on a shared NATS bus with neither trust.operators nor trust.any_exit, the
// exit directory trusts no exit (pins are per tunnel), so a pool would find none.
var ErrNoTrustedExits = &FieldError{Field: "trust.operators",
	Err: errors.New("on a shared NATS bus the exit directory lists only exits an operator certified (trust.operators) or, declared insecure, any exit (trust.any_exit)")}

// DirectoryTrustsExits reports whether the exit directory can list any exit: the engine trusts
// operators' certificates or any exit, or runs on a private bus.
func (e *Engine) DirectoryTrustsExits() bool {
	return len(e.cfg.Trust.Operators) > 0 || e.cfg.Trust.AnyExit || !e.cfg.NATS.shared()
}
