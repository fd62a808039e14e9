package actors

// The tunnel's connections: accepting proxy connections onto the current leg, limits, and the
// counters behind Tunnel.Stats and Tunnel.Connections. Each connection's byte counts are atomics
// its copy loops add to (connLive, made here at accept): the tunnel reads them when asked, so no
// byte count passes through a mailbox while a connection runs.

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/proxy"
)

// errLimit refuses a proxy connection over a limit: SOCKS5 general failure, HTTP 503.
type errLimit struct{ what string }

func (e errLimit) Error() string               { return "connection limit reached: " + e.what }
func (errLimit) ReplyCode() messages.ReplyCode { return messages.ReplyGeneralFailure }
func (errLimit) HTTPStatus() int               { return 503 }

// EndReason: a connection refused at admission ends with limit, not as a failed dial.
func (errLimit) EndReason() messages.EndReason { return messages.EndLimit }

// errNotReady refuses a proxy connection while the tunnel has no session (reconfiguring).
type errNotReady struct{}

func (errNotReady) Error() string                 { return "tunnel is re-establishing its session" }
func (errNotReady) ReplyCode() messages.ReplyCode { return messages.ReplyNetworkUnreachable }
func (errNotReady) HTTPStatus() int               { return 503 }

// EndReason: the connection had no session under it.
func (errNotReady) EndReason() messages.EndReason { return messages.EndTunnelClosed }

// connBook is the tunnel's account of its proxied connections (connection children).
type connBook struct {
	nextConn    uint64
	stats       messages.ConnectionStats
	conns       map[string]connEntry // connection children by PID id
	sources     map[string]int       // active connections per source address
	refusing    int
	handshaking int    // proxy connections still in their handshake (counted in stats.Active too)
	handshakeN  uint64 // order of acceptance, to evict the oldest handshake
	evicting    int    // evicted handshakes not yet ended
	assocs      int    // admitted UDP associations (max_associations)
}

type connEntry struct {
	pid     *actor.PID
	leg     int // 0 for refusals
	source  string
	refusal bool
	pending uint64 // > 0 while in its handshake: the order it was accepted in
	evicted bool   // ended to make room for a new handshake; neither pending nor established

	// what Connections reports (not of refusals)
	id     uint64
	kind   proxy.Kind
	addr   string // the client's address, host:port
	exit   string // its leg's exit
	since  time.Time
	target string    // from its admission on
	udp    bool      // a UDP association (admitted as one)
	live   *connLive // its byte counts so far
}

// accept spawns a connection actor for a proxy connection on the current leg, or a refusal.
func (t *tunnelActor) accept(ctx actor.Context, m *connAccepted) {
	switch {
	case t.ending():
		_ = m.c.Close()
		return
	case t.state == messages.StateReconnecting:
		t.park(ctx, m) // waits for the new leg, up to ReconnectWait
		return
	}
	src := hostOf(m.c.RemoteAddr())
	t.book.nextConn++
	t.book.stats.Opened++
	cfg := connConfig{kind: connProxy, role: "client", id: t.book.nextConn, owner: t.cfg.ID, logger: t.cfg.Logger,
		limits: t.cfg.Conn, proxyKind: m.kind, client: m.c, events: t.cfg.Events,
		proxyOpts: t.cfg.ProxyOpts, udp: t.cfg.UDP} // a refused client authenticates first, too
	var refusal error
	switch {
	case t.current == nil || t.current.state != legUp || t.current.ending():
		refusal = errNotReady{}
	case t.cfg.MaxConns > 0 && t.established() >= t.cfg.MaxConns:
		refusal = errLimit{fmt.Sprintf("tunnel has %d connections", t.established())}
	case t.cfg.MaxConnsPerSource > 0 && t.book.sources[src] >= t.cfg.MaxConnsPerSource:
		refusal = errLimit{fmt.Sprintf("source %s has %d connections", src, t.book.sources[src])}
	}
	if refusal != nil {
		t.spawnRefusal(ctx, cfg, refusal)
		return
	}
	if t.cfg.MaxHandshakes > 0 && t.book.handshaking >= t.cfg.MaxHandshakes && !m.parked {
		// Connections that waited for a reconnect are handed over all at once: they are not
		// evicted for each other (their number is bounded when they are parked).
		t.evictOldestHandshake(ctx)
	}
	// Setup covers the handshake (its own budget) and then the dial (connect_timeout).
	cfg.handshake = t.cfg.ProxyOpts.Budget()
	cfg.dialer = t.current.dialer
	cfg.live = newConnLive(t.cfg.Bytes)
	t.book.stats.Active++
	t.book.sources[src]++
	t.book.handshaking++
	t.book.handshakeN++
	pid := ctx.Spawn(props(newConnActor(cfg)))
	t.book.conns[pid.Id] = connEntry{pid: pid, leg: t.current.id, source: src, pending: t.book.handshakeN,
		id: cfg.id, kind: m.kind, addr: addrOf(m.c.RemoteAddr()), exit: t.current.exitID, since: time.Now(), live: cfg.live}
	t.current.conns[pid.Id] = pid
}

// ending reports whether the tunnel is draining or past it: no connection is accepted any more.
func (t *tunnelActor) ending() bool {
	switch t.state {
	case messages.StateDraining, messages.StateClosing, messages.StateFailed, messages.StateClosed:
		return true
	}
	return false
}

// admit establishes a proxy connection that finished its handshake and is about to dial: it leaves
// the pending handshakes and counts against max_connections — or is refused, if the tunnel is full
// or it was evicted meanwhile.
func (t *tunnelActor) admit(ctx actor.Context, m *connAdmit) {
	e, ok := t.book.conns[m.pid.Id]
	if ok && e.target == "" {
		e.target = m.target
		t.book.conns[m.pid.Id] = e
	}
	switch {
	case !ok || e.evicted:
		ctx.Respond(&connAdmitted{err: errLimit{"evicted to make room for a newer handshake"}})
	case e.pending == 0: // admitted already
		ctx.Respond(&connAdmitted{})
	case t.cfg.MaxConns > 0 && t.established() >= t.cfg.MaxConns:
		ctx.Respond(&connAdmitted{err: errLimit{fmt.Sprintf("tunnel has %d connections", t.established())}})
	case m.udp && t.cfg.UDP.MaxAssociations > 0 && t.book.assocs >= t.cfg.UDP.MaxAssociations:
		ctx.Respond(&connAdmitted{err: errLimit{fmt.Sprintf("tunnel has %d udp associations", t.book.assocs)}})
	default:
		if m.udp {
			e.udp = true
			t.book.assocs++
		}
		e.pending = 0
		t.book.conns[m.pid.Id] = e
		t.book.handshaking--
		ctx.Respond(&connAdmitted{})
	}
}

// evictOldestHandshake ends the connection that has been in its handshake longest, to make room:
// a flood of clients that never finish their handshake cannot keep one that does out.
func (t *tunnelActor) evictOldestHandshake(ctx actor.Context) {
	var oldest connEntry
	for _, e := range t.book.conns {
		if e.pending > 0 && (oldest.pending == 0 || e.pending < oldest.pending) {
			oldest = e
		}
	}
	if oldest.pid == nil {
		return
	}
	e := t.book.conns[oldest.pid.Id]
	e.pending, e.evicted = 0, true // it no longer holds a handshake slot; it ends as soon as it hears
	t.book.conns[oldest.pid.Id] = e
	t.book.handshaking--
	t.book.evicting++
	ctx.Send(oldest.pid, &EndConnection{Reason: messages.EndLimit})
}

// established counts the proxy connections past their handshake (max_connections applies to them).
func (t *tunnelActor) established() int {
	return t.book.stats.Active - t.book.handshaking - t.book.evicting
}

// refuse answers a proxy connection with err's reply (SOCKS5 code, HTTP status) without relaying it.
func (t *tunnelActor) refuse(ctx actor.Context, c net.Conn, kind proxy.Kind, err error) {
	t.book.nextConn++
	t.book.stats.Opened++
	t.spawnRefusal(ctx, connConfig{role: "client", id: t.book.nextConn, owner: t.cfg.ID, logger: t.cfg.Logger,
		limits: t.cfg.Conn, proxyKind: kind, client: c, events: t.cfg.Events,
		proxyOpts: t.cfg.ProxyOpts, udp: t.cfg.UDP}, err)
}

func (t *tunnelActor) spawnRefusal(ctx actor.Context, cfg connConfig, refusal error) {
	if t.book.refusing >= max(t.cfg.MaxConns, 64) { // refusals are bounded too: beyond this, just close
		_ = cfg.client.Close()
		ev := &messages.ConnectionEnded{Owner: t.cfg.ID, Role: "client", ID: cfg.id,
			Incoming: messages.EndLimit, Outgoing: messages.EndLimit, Refused: true}
		t.count(ev)
		emit(ctx, t.cfg.Events, &messages.ConnectionOpened{Owner: t.cfg.ID, Role: "client", ID: cfg.id})
		emit(ctx, t.cfg.Events, ev)
		return
	}
	t.book.refusing++
	cfg.kind, cfg.refusal = connRefuse, refusal
	pid := ctx.Spawn(props(newConnActor(cfg)))
	t.book.conns[pid.Id] = connEntry{pid: pid, refusal: true}
}

// ended counts a connection that ended (its actor has stopped and released its sockets), and
// finishes a drain that was waiting for it.
func (t *tunnelActor) ended(ctx actor.Context, m *messages.ConnectionEnded) {
	if sender := ctx.Sender(); sender != nil {
		if e, ok := t.book.conns[sender.Id]; ok {
			delete(t.book.conns, sender.Id)
			if e.refusal {
				t.book.refusing--
			} else {
				if e.pending > 0 {
					t.book.handshaking--
				}
				if e.evicted {
					t.book.evicting--
				}
				t.book.stats.Active--
				if e.udp {
					t.book.assocs--
				}
				if t.book.sources[e.source]--; t.book.sources[e.source] <= 0 {
					delete(t.book.sources, e.source)
				}
				if l := t.legs[e.leg]; l != nil {
					delete(l.conns, sender.Id)
					if l.draining && len(l.conns) == 0 {
						t.releaseLeg(ctx, l)
					}
				}
			}
		}
	}
	t.count(m)
	if t.state == messages.StateDraining && len(t.book.conns) == 0 {
		t.finishClose(ctx)
	}
}

func (t *tunnelActor) count(m *messages.ConnectionEnded) {
	t.book.stats.Ended++
	t.book.stats.ByEnd[messages.SideIncoming][m.Incoming]++
	t.book.stats.ByEnd[messages.SideOutgoing][m.Outgoing]++
	t.book.stats.Bytes.In += m.BytesIn
	t.book.stats.Bytes.Out += m.BytesOut
	if m.UDP != nil {
		addUDP(&t.book.stats.UDP, m.UDP)
	}
}

// addUDP adds an ended association's counts to st.
func addUDP(st *messages.UDPStats, c *messages.UDPCounts) {
	st.Associations++
	addUDPCounts(&st.UDPCounts, c)
}

func addUDPCounts(st *messages.UDPCounts, c *messages.UDPCounts) {
	st.DatagramsIn += c.DatagramsIn
	st.DatagramsOut += c.DatagramsOut
	for r, n := range c.Dropped {
		if st.Dropped == nil {
			st.Dropped = map[messages.DropReason]uint64{}
		}
		st.Dropped[r] += n
	}
}

// stats are the tunnel's counters; Bytes counts the ended connections' and, so far, the active ones'.
func (t *tunnelActor) stats() messages.ConnectionStats {
	st := t.book.stats
	st.ByEnd = cloneByEnd(t.book.stats.ByEnd)
	st.UDP.Dropped = nil
	addUDPCounts(&st.UDP.UDPCounts, &messages.UDPCounts{Dropped: t.book.stats.UDP.Dropped})
	for _, e := range t.book.conns {
		if e.live != nil {
			st.Bytes.In += e.live.in.Load()
			st.Bytes.Out += e.live.out.Load()
			if e.udp {
				addUDPCounts(&st.UDP.UDPCounts, e.live.udp.counts())
			}
		}
	}
	return st
}

// connections describes the active proxied connections (refusals left out), sorted by ID.
func (t *tunnelActor) connections() []messages.ConnInfo {
	out := make([]messages.ConnInfo, 0, len(t.book.conns))
	for _, e := range t.book.conns {
		if e.refusal || e.live == nil {
			continue
		}
		kind := e.kind.String()
		if e.udp {
			kind += "-udp"
		}
		out = append(out, messages.ConnInfo{ID: e.id, Kind: kind, Source: e.addr, Target: e.target, Since: e.since,
			BytesIn: e.live.in.Load(), BytesOut: e.live.out.Load(), Exit: e.exit})
	}
	slices.SortFunc(out, func(a, b messages.ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func addrOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

func newByEnd() map[messages.Side]map[messages.EndReason]uint64 {
	return map[messages.Side]map[messages.EndReason]uint64{messages.SideIncoming: {}, messages.SideOutgoing: {}}
}

func cloneByEnd(m map[messages.Side]map[messages.EndReason]uint64) map[messages.Side]map[messages.EndReason]uint64 {
	out := newByEnd()
	for side, reasons := range m {
		for r, n := range reasons {
			out[side][r] = n
		}
	}
	return out
}
