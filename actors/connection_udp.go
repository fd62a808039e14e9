package actors

// SOCKS5 UDP associations. An association is a connection actor like any proxied connection; once
// established it runs datagram loops in place of the copy loops (the connection diagram holds:
// Relaying until a part ends, then every socket is closed and the actor stops):
//
//	client: SOCKS5 control conn (in) ── its EOF or failure ends the association
//	        relay socket ──RelayFromClient──▶ tunnel socket ──▶ exit half
//	        relay socket ◀──RelayToClient──── tunnel socket
//	        exit control channel (out) ── notices of drops; its EOF (the exit ended) ends it
//	exit:   control channel (in) ── its EOF (the client ended) ends the half
//	        tunnel socket ──toDestinations──▶ host socket (egress policy, names resolved here)
//	        tunnel socket ◀──fromDestinations── host socket (only from destinations sent to)
//
// Each loop is a goroutine the actor owns (counted in pumps and wg) that reports once, when it
// ends (udpPartDone); datagrams never pass through the mailbox. The first part to end decides the
// reasons; the actor then closes every socket (Stopping closes them too, whatever happened), waits
// for the other parts and stops. Counts are atomics in connLive the loops add to.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/proxy"
)

// UDPLimits are a tunnel's SOCKS5 UDP association settings.
type UDPLimits struct {
	Disabled        bool          // UDP ASSOCIATE is refused (0x07)
	Idle            time.Duration // no datagram either way for this long ends an association
	MaxAssociations int           // at once per tunnel; 0 unlimited
}

// udpParts are an association's sockets besides in and out; alive until Stopping (or until the
// first part ends, which closes them all).
type udpParts struct {
	sess  *proxy.UDPSession        // client: the relay socket and the client's address
	assoc *netstack.UDPAssociation // client: the tunnel socket (assoc.Control is c.out)
	sock  *netstack.UDPSocket      // exit: the tunnel socket, connected to the client's
	host  *net.UDPConn             // exit: the host socket towards destinations
	exit  *exitUDP                 // exit: destinations, resolution and policy
}

func (u *udpParts) close() {
	if u.sess != nil {
		_ = u.sess.Relay.Close()
	}
	if u.assoc != nil {
		_ = u.assoc.Conn.Close()
	}
	if u.sock != nil {
		_ = u.sock.Close()
	}
	if u.host != nil {
		_ = u.host.Close()
	}
	if u.exit != nil {
		u.exit.cancel()
	}
}

// errUDPPanic: an association's loop panicked (logged with its stack).
var errUDPPanic = errors.New("udp association loop panicked")

// udpPartDone reports the end of one of an association's loops: whichever ends first decides.
type udpPartDone struct {
	err error // nil or io.EOF: a clean end (a control connection closed by its peer)
}

// udpLive counts an association's datagrams; its loops add, the owner and the actor read.
type udpLive struct {
	in, out atomic.Int64
	drops   [len(messages.AllDropReasons)]atomic.Int64 // by messages.AllDropReasons' index
}

// udpCounter is the proxy.UDPCounter of a connection: payload bytes into its byte counts (and its
// role's totals), datagrams and drops into its udpLive.
type udpCounter struct{ l *connLive }

func (c udpCounter) In(n int)  { c.l.in.Add(int64(n)); c.l.udp.in.Add(1) }
func (c udpCounter) Out(n int) { c.l.out.Add(int64(n)); c.l.udp.out.Add(1) }
func (c udpCounter) Drop(r messages.DropReason) {
	if i := dropIndex(r); i >= 0 {
		c.l.udp.drops[i].Add(1)
	}
}

func dropIndex(r messages.DropReason) int {
	for i, d := range messages.AllDropReasons {
		if d == r {
			return i
		}
	}
	return -1
}

// counts snapshots the association's counts.
func (l *udpLive) counts() *messages.UDPCounts {
	c := &messages.UDPCounts{DatagramsIn: l.in.Load(), DatagramsOut: l.out.Load()}
	for i, r := range messages.AllDropReasons {
		if n := l.drops[i].Load(); n > 0 {
			if c.Dropped == nil {
				c.Dropped = map[messages.DropReason]uint64{}
			}
			c.Dropped[r] = uint64(n)
		}
	}
	return c
}

// associate is the client's proxy.AssociateFunc: admission (max_connections and
// max_associations), then the exit half through the tunnel. What it opens is left in *out for the
// setup's outcome.
func (c *connActor) associate(ctx context.Context, out **netstack.UDPAssociation) error {
	if err := c.admitAs(ctx, "udp", true); err != nil {
		return err
	}
	a, err := c.cfg.dialer.AssociateUDP(ctx)
	if err != nil {
		return err
	}
	*out = a
	return nil
}

// setupExitUDP answers a client's ConnectCmdUDP on the exit: the tunnel socket connected to the
// client's, and the host socket towards destinations.
func (c *connActor) setupExitUDP(in net.Conn, clientPort uint16) any {
	local, err := netip.ParseAddrPort(in.LocalAddr().String())
	if err != nil || c.cfg.stack == nil {
		_ = netstack.WriteConnectReply(in, messages.ReplyGeneralFailure)
		if err == nil {
			err = errors.New("no stack")
		}
		return &connSetupFailed{reason: messages.EndInternalError, target: "udp", err: fmt.Errorf("udp association: %w", err)}
	}
	host, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		_ = netstack.WriteConnectReply(in, messages.ReplyGeneralFailure)
		return &connSetupFailed{reason: messages.EndError, target: "udp", err: fmt.Errorf("udp association: host socket: %w", err)}
	}
	_ = host.SetReadBuffer(proxy.UDPSocketBuffer)
	_ = host.SetWriteBuffer(proxy.UDPSocketBuffer)
	ok := false
	defer func() { // a panic below must not leave the host socket open
		if !ok {
			_ = host.Close()
		}
	}()
	sock, err := c.cfg.stack.AcceptUDP(in, local.Addr().Unmap(), clientPort)
	if err != nil {
		return &connSetupFailed{reason: classify(err), target: "udp", err: err}
	}
	ok = true
	x := newExitUDP(sock, host, in, c.cfg.egress, c.cfg.udpMax, c.cfg.limits.Setup)
	return &connEstablished{in: in, target: "udp", udp: &udpParts{sock: sock, host: host, exit: x}}
}

// adoptUDPLimits: an association's inactivity timeout is the UDP one; it has no keep-alive
// allowance and no max lifetime of its own beyond the connection's.
func (c *connActor) adoptUDPLimits() {
	idle := c.cfg.udp.Idle
	if c.cfg.role == "exit" {
		idle = c.cfg.udpIdle
	}
	c.cfg.limits.Idle, c.cfg.limits.KeepaliveIdle, c.cfg.limits.IdleExempt = idle, idle, nil
}

// logUDP writes an association's one log line.
func (c *connActor) logUDP(lvl slog.Level, ev *messages.ConnectionEnded) {
	c.cfg.logger.Log(context.Background(), lvl, "udp association ended", "conn", ev.ID, "role", ev.Role, "owner", ev.Owner,
		"source", ev.Source, "duration", ev.Duration.Round(logPrecision), "datagrams_in", ev.UDP.DatagramsIn,
		"datagrams_out", ev.UDP.DatagramsOut, "bytes_in", ev.BytesIn, "bytes_out", ev.BytesOut, "dropped", ev.UDP.Dropped,
		"incoming", ev.Incoming, "outgoing", ev.Outgoing)
}

// runUDP starts an established association's loops.
func (c *connActor) runUDP(u *udpParts) {
	c.udp = u
	system, self := c.system, c.self
	report := func(err error) { system.Root.Send(self, &udpPartDone{err: err}) }
	count := udpCounter{c.live}
	logger, id := c.cfg.logger, c.cfg.id
	start := func(loop string, f func() error) {
		c.wg.Add(1)
		c.pumps++
		goOn(system, func() {
			defer c.wg.Done()
			// The loops parse what the client (or the exit) sends: a panic ends this association
			// with internal_error, not the process.
			defer func() {
				if r := recover(); r != nil {
					logger.Error("udp association loop panicked", "conn", id, "loop", loop, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					report(errUDPPanic)
				}
			}()
			report(f())
		})
	}
	// The incoming control connection carries nothing more: read it until its peer closes it.
	in := c.in
	start("control", func() error { _, err := io.Copy(io.Discard, in); return err })
	if u.sess != nil { // client
		sess, assoc, ctl := u.sess, u.assoc, c.out
		start("notices", func() error { return readNotices(ctl, count) })
		start("toward", func() error { return sess.RelayFromClient(assoc.Conn, count) })
		start("back", func() error { return sess.RelayToClient(assoc.Conn, count) })
		return
	}
	x := u.exit
	start("toward", func() error { return x.toDestinations(count) })
	start("back", func() error { return x.fromDestinations(count) })
}

// readNotices counts the exit's notices of dropped datagrams until it closes the channel.
func readNotices(ctl net.Conn, count udpCounter) error {
	var buf netstack.NoticeBuffer
	for {
		n, err := netstack.ReadUDPNotice(ctl, &buf)
		if err != nil {
			return err // a bad notice ends the association: the exit does not speak the protocol
		}
		count.Drop(noticeDrop(n.Code))
	}
}

// noticeCodes are the drops an exit tells its client of, and the code each travels as.
var noticeCodes = [...]struct {
	drop messages.DropReason
	code messages.ReplyCode
}{
	{messages.DropPolicyDenied, messages.ReplyNotAllowed},
	{messages.DropUnresolvable, messages.ReplyHostUnreachable},
	{messages.DropLimit, messages.ReplyGeneralFailure},
}

// noticeDrop maps a notice's code to the drop reason the exit counted.
func noticeDrop(code messages.ReplyCode) messages.DropReason {
	for _, n := range noticeCodes {
		if n.code == code {
			return n.drop
		}
	}
	return messages.DropSendFailed
}

// noticeCode is the code a drop's notice travels as.
func noticeCode(drop messages.DropReason) messages.ReplyCode {
	for _, n := range noticeCodes {
		if n.drop == drop {
			return n.code
		}
	}
	return messages.ReplyGeneralFailure
}

// udpPartEnded: one loop ended. The first end decides the reasons and closes everything; the actor
// stops when the last loop has reported.
func (c *connActor) udpPartEnded(ctx actor.Context, m *udpPartDone) {
	c.pumps--
	if !c.ending && !c.closedUs {
		why := messages.EndNormal
		switch {
		case errors.Is(m.err, errUDPPanic):
			why = messages.EndInternalError
		case m.err != nil && !errors.Is(m.err, io.EOF) && !errors.Is(m.err, net.ErrClosed):
			why = classify(m.err)
		}
		// A clean end of one side's control connection ends the other side normally too (we
		// close it); a failure anywhere is both sides' reason, as for a TCP connection.
		c.setBoth(why)
		c.closeUDP()
	}
	if c.pumps == 0 {
		c.setBoth(messages.EndNormal)
		ctx.Stop(ctx.Self())
	}
}

// closeUDP closes every socket of the association (control connections with a FIN): its loops end.
func (c *connActor) closeUDP() {
	c.closedUs = true
	closeQuietly(c.in)
	closeQuietly(c.out)
	if c.udp != nil {
		c.udp.close()
	}
}
