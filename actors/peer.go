package actors

// The peer actor owns one WireGuard peer on its device: on the exit, a client session or a static
// peer, with the connections of its flows as children; on the client, the exit, and the probe that
// proves the data plane after the first handshake.
//
//	Started ──(client) probe ok──▶ HandshakeCompleted to notify
//	   │        probe failed ────▶ probeFailed to notify
//	running ──endWith(why)──▶ ending: (a client session: the WireGuard peer removed first)
//	                            endWith(why) to every connection; flows refused
//	                            ──all terminated, or childrenEndWait──▶ stop
//	Stopping: cancel the probe and wait; remove the peer from the device; children (flows) stop.
//
// Stopped from outside (a client's goodbye, the idle sweep, its exit stopped), its connections stop
// with it and end with their own default, tunnel_closed. A client's peer has no connections: the
// tunnel owns the proxied ones.

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

type peerConfig struct {
	dev        *device.Device // owned by the parent device actor, alive while this actor is
	publicKey  signaling.Key
	sessionID  string
	owner      string
	probe      func(context.Context) error // client: the first probe through the leg
	probeLimit time.Duration
	notify     *actor.PID
	logger     *slog.Logger

	egress   *netstack.EgressPolicy
	conn     ConnTimeouts // for flows; UDP flows use udpIdle as their inactivity timeout
	udpIdle  time.Duration
	udpMax   int             // destinations per UDP association; 0 unlimited
	stack    *netstack.Stack // the exit's stack (UDP associations), alive while the device actor is
	maxConns int             // flows at once; 0 unlimited
	events   *actor.PID
	flows    *actor.PID  // the exit: hears flowsChanged as connections open and end (nil on a client)
	bytes    *ByteTotals // the engine's byte totals of forwarded flows (nil: none)

	// goodbye: a client session on the exit, told of the exit's end by a signed goodbye. Told
	// endWith, the peer leaves the WireGuard device before its connections end, so that their
	// resets cannot reach the client ahead of the goodbye: the client's connections then end with
	// tunnel_closed, not with a reset that raced it. A static peer has no goodbye: it keeps its
	// resets, its only news of the end.
	goodbye bool
}

// probeFailed: the data plane could not be proven within the limit.
type probeFailed struct {
	sessionID string
	err       error
}

type probeDone struct {
	err error
	rtt time.Duration
}

type peerActor struct {
	cfg      peerConfig
	behavior actor.Behavior
	endT     *time.Timer        // bounds the wait for connections told endWith; stopped in Stopping
	endWhy   messages.EndReason // what endWith said, for flows refused while ending
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	nextConn uint64
	active   int      // connection children
	stopping bool     // set on endWith or in Stopping: flows that still arrive are refused, not spawned
	counted  bool     // Stopping reported the connections still open to cfg.flows: nothing more is reported
	removed  bool     // the WireGuard peer is gone from the device (goodbye on endWith, or Stopping)
	refused  refusals // flows refused lately, for the client's refusal queries (peer_refusals.go)
}

func newPeerActor(cfg peerConfig) actor.Producer {
	return func() actor.Actor {
		p := &peerActor{cfg: cfg, behavior: actor.NewBehavior()}
		p.behavior.Become(p.running)
		return p
	}
}

func (p *peerActor) Receive(ctx actor.Context) { p.behavior.Receive(ctx) }

// ending: the connections were told why they end; the peer stops once they have terminated.
func (p *peerActor) ending(ctx actor.Context) {
	if !awaitChildren(ctx, p.cfg.logger) {
		p.running(ctx)
	}
}

func (p *peerActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if p.cfg.probe != nil {
			pctx, cancel := context.WithTimeout(context.Background(), p.cfg.probeLimit)
			p.cancel = cancel
			p.wg.Add(1)
			system, self, probe := ctx.ActorSystem(), ctx.Self(), p.cfg.probe
			go func() {
				defer p.wg.Done()
				start := time.Now()
				err := probe(pctx)
				system.Root.Send(self, &probeDone{err: err, rtt: time.Since(start)})
			}()
		}
	case *probeDone:
		p.cfg.logger.Debug("probe", "session", p.cfg.sessionID, "rtt", m.rtt, "err", m.err)
		if m.err != nil {
			ctx.Send(p.cfg.notify, &probeFailed{sessionID: p.cfg.sessionID, err: m.err})
			return
		}
		ctx.Send(p.cfg.notify, &messages.HandshakeCompleted{SessionID: p.cfg.sessionID, RTT: m.rtt})
	case *flowTCP:
		if p.stopping || p.full() {
			p.refused.add(keyOf(m.f.Src.Port(), m.f.Dst), messages.ReplyGeneralFailure, time.Now()) // as the connect service's close reads
			m.f.Reject()
			p.refusedForLimit(ctx)
			return
		}
		p.spawnConn(ctx, connConfig{kind: connFlowTCP, tcpFlow: m.f})
	case *flowUDP:
		if p.stopping || p.full() {
			m.f.Reject()
			p.refusedForLimit(ctx)
			return
		}
		cfg := connConfig{kind: connFlowUDP, udpFlow: m.f}
		cfg.limits = p.cfg.conn
		cfg.limits.Idle, cfg.limits.KeepaliveIdle = p.cfg.udpIdle, p.cfg.udpIdle
		p.spawnConn(ctx, cfg)
	case *flowRefused:
		p.refused.add(m.flow, m.code, time.Now())
	case *refusalQuery:
		ctx.Respond(&refusalAnswer{code: p.refused.code(m.flow, time.Now())})
	case *serviceConn:
		// Over the limit, a few connections are still read: a refusal query is answered (the
		// client's direct flow was refused for that limit), anything else refused as before.
		if p.stopping || p.cfg.maxConns > 0 && p.active >= p.cfg.maxConns+refusalOverdraft {
			_ = m.c.Close()
			p.refusedForLimit(ctx)
			return
		}
		p.spawnConn(ctx, connConfig{kind: connService, in: m.c, overLimit: p.full()})
	case *messages.ConnectionEnded, *pingServed:
		p.active--
		if !p.counted {
			emit(ctx, p.cfg.flows, &flowsChanged{delta: -1, sessionID: p.cfg.sessionID})
		}
	case *endWith:
		if p.stopping {
			return
		}
		p.stopping, p.endWhy = true, m.why
		if p.cfg.goodbye {
			p.removePeer()
		}
		p.endT = endChildren(ctx, m.why, ctx.Children())
		p.behavior.Become(p.ending)
		stopWhenEnded(ctx, p.cfg.logger, len(ctx.Children()), false)
	case *actor.Stopping:
		p.stopping = true
		stopTimers(p.endT)
		if p.cancel != nil {
			p.cancel()
		}
		p.wg.Wait()
		p.removePeer()
		if !p.counted && p.active > 0 { // they stop with the peer: their reports may never be read
			emit(ctx, p.cfg.flows, &flowsChanged{delta: -p.active, sessionID: p.cfg.sessionID})
		}
		p.counted = true
	}
}

// removePeer takes the WireGuard peer off the device, once.
func (p *peerActor) removePeer() {
	if p.removed {
		return
	}
	p.removed = true
	if err := p.cfg.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", p.cfg.publicKey.Hex())); err != nil {
		p.cfg.logger.Debug("remove peer", "session", p.cfg.sessionID, "err", err)
	}
}

func (p *peerActor) full() bool { return p.cfg.maxConns > 0 && p.active >= p.cfg.maxConns }

// refusedForLimit counts a flow refused over the session's limit (or while stopping).
func (p *peerActor) refusedForLimit(ctx actor.Context) {
	p.nextConn++
	why := messages.EndLimit
	switch {
	case p.endWhy != "":
		why = p.endWhy
	case p.stopping:
		why = messages.EndTunnelClosed
	}
	emit(ctx, p.cfg.events, &messages.ConnectionOpened{Owner: p.cfg.owner + "/" + p.cfg.sessionID, Role: "exit", ID: p.nextConn})
	emit(ctx, p.cfg.events, &messages.ConnectionEnded{Owner: p.cfg.owner + "/" + p.cfg.sessionID, Role: "exit",
		ID: p.nextConn, Incoming: why, Outgoing: why, Refused: true})
}

func (p *peerActor) spawnConn(ctx actor.Context, cfg connConfig) {
	p.nextConn++
	p.active++
	emit(ctx, p.cfg.flows, &flowsChanged{delta: 1, sessionID: p.cfg.sessionID})
	cfg.id, cfg.role, cfg.owner, cfg.logger = p.nextConn, "exit", p.cfg.owner+"/"+p.cfg.sessionID, p.cfg.logger
	if cfg.limits.Setup == 0 {
		cfg.limits = p.cfg.conn
	}
	cfg.egress, cfg.events, cfg.totals = p.cfg.egress, p.cfg.events, p.cfg.bytes
	cfg.stack, cfg.udpIdle, cfg.udpMax = p.cfg.stack, p.cfg.udpIdle, p.cfg.udpMax
	ctx.Spawn(props(newConnActor(cfg)))
}
