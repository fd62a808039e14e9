package actors

// The device actor owns a WireGuard device, the gVisor netstack it runs on, and its UDP bind; on
// the exit also the connect-service listener and the probe echo socket, with their loops. Peers are
// its children.
//
//	Started ──created (deviceReady to parent)──▶ running ──Stopping──▶ (below)
//	   │                                           └──endWith(why)──▶ ending: listener and echo closed, endWith(why) to every peer
//	   │                                                ──peers terminated, or childrenEndWait (5 s; warning)──▶ stop
//	   └──failed (what it created released)──▶ deviceFailed to parent; waits for its owner to stop it
//	Stopping: listener and echo closed, their loops awaited; peers stop ──Stopped──▶ netstack → device → bind
//
// Release order (Stopping, then Stopped after every child has stopped):
// connect-service listener and probe echo → peers (each removes its WireGuard peer) → netstack → device → UDP bind.
// Told endWith (its exit ends), the peers end before the device stops, telling their connections
// why; stopped from outside (its exit stopped), its peers stop with it and their connections end
// with their default, tunnel_closed. A client device (a leg's child) stops with its leg; its peer
// has no connections: the tunnel owns the proxied ones and ends them itself (before closeLeg, or
// before it stops).
// wireguard-go's Device.Close closes the tun.Device (our netstack) before the bind, and waits for
// its goroutines; it runs when the actor stops, never later.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

type deviceRole int

const (
	roleClient deviceRole = iota + 1
	roleExit
)

type deviceConfig struct {
	role       deviceRole
	owner      string // tunnel or exit id, for logs
	privateKey signaling.Key
	listen     netip.AddrPort // UDP bind address; port 0 picks one
	addresses  []netip.Addr   // the device's tunnel addresses
	mtu        int
	logger     *slog.Logger
	// exit
	connectPort   uint16
	egress        *netstack.EgressPolicy
	allowLoopback bool
	conn          ConnTimeouts
	udpIdle       time.Duration
	udpMax        int // destinations per UDP association
	maxConns      int // per peer
	events        *actor.PID
	flows         *actor.PID // the exit: hears flowsChanged from every peer
	bytes         *ByteTotals
}

// deviceReady tells the parent the device is up.
type deviceReady struct {
	stack     *netstack.Stack // alive until the device actor stops
	endpoint  netip.AddrPort  // the bound UDP address
	publicKey signaling.Key
	traffic   func() (rx, tx uint64) // bytes received from all peers, packets of data sent to them (Device.Traffic); cheap, safe from any goroutine
	handshake func() time.Time       // the last completed handshake with any peer (Device.LastHandshake): one atomic read, no lock
	dev       *device.Device         // alive until the device actor stops (a WireGuard exit's probes force handshakes on it)
}

type deviceFailed struct{ err error }

// addPeer configures a WireGuard peer on the device and spawns the peer actor that owns it.
type addPeer struct {
	publicKey  signaling.Key
	allowedIPs []netip.Prefix
	endpoint   netip.AddrPort // client: the exit's endpoint; exit: unset (learned from handshakes)
	psk        *signaling.Key // the peer's preshared key; nil: none
	keepalive  int            // seconds; 0 off
	sessionID  string
	probe      func(context.Context) error // client: prove the data plane and report HandshakeCompleted to notify
	notify     *actor.PID
	probeLimit time.Duration
	goodbye    bool // exit: the client hears of the peer's end by a signed goodbye (see peerConfig.goodbye)
}

type addPeerResponse struct {
	pid *actor.PID
	err error
}

// getPeerStats asks the device for its peers' receive counters; the reply is *peerStats.
type getPeerStats struct{}

type peerStats struct {
	rxByPeer map[signaling.Key]int64 // bytes received, per peer public key
	err      error
}

type flowTCP struct{ f *netstack.TCPFlow }
type flowUDP struct{ f *netstack.UDPFlow }
type serviceConn struct{ c net.Conn }

type deviceActor struct {
	cfg        deviceConfig
	behavior   actor.Behavior
	endT       *time.Timer     // bounds the wait for peers told endWith; stopped in Stopping
	stack      *netstack.Stack // alive until Stopped
	bind       *netstack.Bind
	dev        *device.Device
	listener   net.Listener   // exit connect service; closed on endWith or in Stopping
	stopAccept chan struct{}  // closed with the listener, before it; nil once closed
	echo       net.PacketConn // exit: the probe echo service; closed with the listener
	echoEnd    chan struct{}  // closed when the echo loop has returned
	acceptEnd  chan struct{}  // closed when the accept loop has returned
	peers      map[netip.Addr]*actor.PID
	stopping   bool // set on endWith or in Stopping: no new peer; flows are refused
}

func newDeviceActor(cfg deviceConfig) actor.Producer {
	return func() actor.Actor {
		d := &deviceActor{cfg: cfg, behavior: actor.NewBehavior(), peers: map[netip.Addr]*actor.PID{}}
		d.behavior.Become(d.running)
		return d
	}
}

func (d *deviceActor) Receive(ctx actor.Context) { d.behavior.Receive(ctx) }

// ending: the peers were told why they end; the device stops once they have terminated.
func (d *deviceActor) ending(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Terminated); ok {
		d.running(ctx) // its bookkeeping of peers first
	}
	if !awaitChildren(ctx, d.cfg.logger) {
		d.running(ctx)
	}
}

func (d *deviceActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if err := d.create(ctx); err != nil {
			d.release()
			ctx.Request(ctx.Parent(), &deviceFailed{err: err}) // Request carries the sender; the parent (a leg, or the exit) has only this device
			// It waits for its owner to stop it: its Terminated (a system message) would otherwise
			// overtake this report, and the owner would know only that it stopped, not why.
			d.behavior.Become(d.failed)
			return
		}
		d.cfg.logger.Debug("device up", "role", d.cfg.role, "udp", d.bind.LocalAddrPort(), "addresses", d.cfg.addresses)
		ctx.Request(ctx.Parent(), &deviceReady{stack: d.stack, endpoint: d.bind.LocalAddrPort(), publicKey: d.cfg.privateKey.Public(),
			traffic: d.dev.Traffic, handshake: d.dev.LastHandshake, dev: d.dev})
	case *getPeerStats:
		if d.stopping || d.dev == nil {
			ctx.Respond(&peerStats{err: errors.New("device stopping")})
			return
		}
		ctx.Respond(readPeerStats(d.dev))
	case *addPeer:
		if d.stopping || d.dev == nil {
			ctx.Respond(&addPeerResponse{err: errors.New("device stopping")})
			return
		}
		pid, err := d.addPeer(ctx, m)
		ctx.Respond(&addPeerResponse{pid: pid, err: err})
	case *actor.Terminated:
		for a, pid := range d.peers {
			if pid.Equal(m.Who) {
				delete(d.peers, a)
			}
		}
	case *flowTCP:
		if pid := d.route(m.f.Src.Addr()); pid != nil {
			ctx.Send(pid, m)
		} else {
			m.f.Reject()
		}
	case *flowUDP:
		if pid := d.route(m.f.Src.Addr()); pid != nil {
			ctx.Send(pid, m)
		} else {
			m.f.Reject()
		}
	case *serviceConn:
		src, _ := netip.ParseAddrPort(m.c.RemoteAddr().String())
		if pid := d.route(src.Addr()); pid != nil {
			ctx.Send(pid, m)
		} else {
			_ = m.c.Close()
		}
	case *endWith:
		if !d.stopping {
			d.stopping = true
			d.closeServices() // closes only; the loops are waited for in Stopping
			d.endT = endChildren(ctx, m.why, ctx.Children())
			d.behavior.Become(d.ending)
			stopWhenEnded(ctx, d.cfg.logger, len(ctx.Children()), false)
		}
	case *actor.Stopping:
		d.stopping = true
		stopTimers(d.endT)
		d.closeServices()
		d.awaitServices() // bounded: each loop ends as its socket closes
	case *actor.Stopped:
		d.release()
	}
}

// closeServices closes the exit's connect-service listener and probe echo (once; stopAccept is
// nil after); it never waits: their loops are awaited in Stopping.
func (d *deviceActor) closeServices() {
	if d.stopAccept == nil {
		return
	}
	close(d.stopAccept)
	d.stopAccept = nil
	if d.listener != nil {
		_ = d.listener.Close()
	}
	if d.echo != nil {
		_ = d.echo.Close()
	}
}

// awaitServices waits for the accept and echo loops (Stopping only: their sockets are closed).
func (d *deviceActor) awaitServices() {
	if d.listener != nil {
		<-d.acceptEnd
		d.listener = nil
	}
	if d.echo != nil {
		<-d.echoEnd
		d.echo = nil
	}
}

func (d *deviceActor) route(src netip.Addr) *actor.PID {
	if d.stopping {
		return nil
	}
	return d.peers[src.Unmap()]
}

func (d *deviceActor) create(ctx actor.Context) error {
	var handler netstack.FlowHandler
	if d.cfg.role == roleExit {
		handler = flowForwarder{system: ctx.ActorSystem(), device: ctx.Self()}
	}
	stack, err := netstack.New(netstack.Config{Addresses: d.cfg.addresses, MTU: d.cfg.mtu, Handler: handler, AllowLoopback: d.cfg.allowLoopback})
	if err != nil {
		return fmt.Errorf("netstack: %w", err)
	}
	d.stack = stack
	d.bind = netstack.NewBind(d.cfg.listen.Addr())
	opts := exitDevice // the exit's device serves every session
	if d.cfg.role == roleClient {
		opts = clientDevice // one peer: third_party/wireguard DeviceOptions
	}
	d.dev = device.NewDeviceWith(stack, d.bind, wireguardLogger(d.cfg.logger), opts)
	conf := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", d.cfg.privateKey.Hex(), d.cfg.listen.Port())
	if err := d.dev.IpcSet(conf); err != nil {
		return fmt.Errorf("configure device: %w", err)
	}
	if err := d.dev.Up(); err != nil {
		return fmt.Errorf("bring device up on %s: %w", d.cfg.listen, err)
	}
	if !d.bind.LocalAddrPort().IsValid() {
		return fmt.Errorf("bind UDP %s: %w", d.cfg.listen, errors.New("bind did not open"))
	}
	if d.cfg.role == roleExit {
		svc := netip.AddrPortFrom(d.cfg.addresses[0], d.cfg.connectPort)
		ln, err := stack.ListenTCP(svc)
		if err != nil {
			return fmt.Errorf("connect service on %s: %w", svc, err)
		}
		echo, err := stack.ListenUDP(svc)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("probe echo on %s: %w", svc, err)
		}
		d.echo, d.echoEnd, d.stopAccept = echo, make(chan struct{}), make(chan struct{})
		stopEcho := d.stopAccept
		go func() { defer close(d.echoEnd); netstack.ServeEcho(echo, stopEcho) }()
		d.listener, d.acceptEnd = ln, make(chan struct{})
		go acceptLoop(ln, d.stopAccept, d.acceptEnd, func(c net.Conn) { ctx.ActorSystem().Root.Send(ctx.Self(), &serviceConn{c: c}) })
	}
	return nil
}

// release closes the device, which closes the netstack first and the UDP bind last.
func (d *deviceActor) release() {
	if d.dev != nil {
		d.dev.Close()
		d.dev = nil
		return
	}
	if d.stack != nil {
		_ = d.stack.Close()
		d.stack = nil
	}
	if d.bind != nil {
		_ = d.bind.Close()
		d.bind = nil
	}
}

// failed: what it created is released and its owner was told; it waits to be stopped.
func (d *deviceActor) failed(actor.Context) {}

func (d *deviceActor) addPeer(ctx actor.Context, m *addPeer) (*actor.PID, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\n", m.publicKey.Hex())
	if m.endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", m.endpoint)
	}
	if m.psk != nil {
		fmt.Fprintf(&b, "preshared_key=%s\n", m.psk.Hex())
	}
	if m.keepalive > 0 {
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", m.keepalive)
	}
	for _, p := range m.allowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p)
	}
	if err := d.dev.IpcSet(b.String()); err != nil {
		return nil, fmt.Errorf("add peer: %w", err)
	}
	d.cfg.logger.Debug("peer added", "session", m.sessionID, "endpoint", m.endpoint, "allowed", m.allowedIPs)
	pid := ctx.Spawn(props(newPeerActor(peerConfig{
		dev: d.dev, publicKey: m.publicKey, sessionID: m.sessionID, owner: d.cfg.owner,
		probe: m.probe, probeLimit: m.probeLimit, notify: m.notify, logger: d.cfg.logger,
		egress: d.cfg.egress, conn: d.cfg.conn, udpIdle: d.cfg.udpIdle, maxConns: d.cfg.maxConns,
		udpMax: d.cfg.udpMax, stack: d.stack,
		events: d.cfg.events, flows: d.cfg.flows, goodbye: m.goodbye, bytes: d.cfg.bytes,
	})))
	ctx.Watch(pid)
	for _, p := range m.allowedIPs {
		if p.IsSingleIP() {
			d.peers[p.Addr().Unmap()] = pid
		}
	}
	return pid, nil
}

// flowForwarder hands the netstack's new flows (on gVisor goroutines) to the device actor.
type flowForwarder struct {
	system *actor.ActorSystem
	device *actor.PID
}

func (f flowForwarder) HandleTCP(fl *netstack.TCPFlow) { f.system.Root.Send(f.device, &flowTCP{f: fl}) }
func (f flowForwarder) HandleUDP(fl *netstack.UDPFlow) { f.system.Root.Send(f.device, &flowUDP{f: fl}) }

// wireguardLogger routes wireguard-go's log to slog at debug level, formatting nothing unless debug
// is enabled (wireguard-go logs per handshake and keepalive, never per data packet).
func wireguardLogger(l *slog.Logger) *device.Logger {
	logf := func(format string, args ...any) {
		if l.Enabled(context.Background(), slog.LevelDebug) {
			l.Debug("wireguard: " + fmt.Sprintf(format, args...))
		}
	}
	return &device.Logger{Verbosef: logf, Errorf: logf}
}

// readPeerStats reads each peer's receive counter (Device.ReceivedByPeer).
func readPeerStats(dev *device.Device) *peerStats {
	st := &peerStats{rxByPeer: map[signaling.Key]int64{}}
	dev.ReceivedByPeer(func(key device.NoisePublicKey, rx uint64) { st.rxByPeer[signaling.Key(key)] = int64(rx) })
	return st
}
