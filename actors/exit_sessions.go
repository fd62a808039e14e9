package actors

// The exit's sessions: a request granted (its address allocated and its peer added before the
// answer), the address pool, and the sweep of sessions whose clients went silent (they died
// without a goodbye).

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

func (e *exitActor) grant(ctx actor.Context, req *messages.SessionRequest) {
	refuse := func(code, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		e.cfg.Logger.Warn("session refused", "session", req.SessionID, "client", req.ClientID, "code", code, "reason", msg)
		ctx.Respond(&sessionGranted{err: &signaling.WireError{Code: code, Message: msg}})
	}
	if req.ExitID != e.cfg.ID {
		refuse(messages.ErrCodeBadRequest, "request for exit %q reached exit %q", req.ExitID, e.cfg.ID)
		return
	}
	now := time.Now()
	if e.pending[req.SessionID] != nil {
		refuse(messages.ErrCodeReplayed, "request already seen")
		return
	}
	if code, text := e.admitRequest(req, now); code != "" {
		refuse(code, "%s", text)
		return
	}
	key, _ := signaling.ParseKey(req.WGPublicKey) // validated by the codec
	if _, used := e.keys[key]; used {
		// wireguard-go would update the existing peer (and take its address): refuse instead.
		e.releaseClient(req.ClientID)
		refuse(messages.ErrCodeBadRequest, "wireguard key in use")
		return
	}
	addr, err := e.allocate()
	if err != nil {
		e.releaseClient(req.ClientID)
		refuse(messages.ErrCodeExhausted, "%v", err)
		return
	}
	e.pending[req.SessionID] = &pendingSession{clientID: req.ClientID}
	e.keys[key] = req.SessionID
	f := ctx.RequestFuture(e.device, &addPeer{
		publicKey: key, allowedIPs: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}, sessionID: req.SessionID,
		goodbye: true,
	}, addPeerWait)
	reenter(ctx, f, func(res any, err error) {
		goneAlready := e.pending[req.SessionID].gone
		delete(e.pending, req.SessionID)
		if e.stopped() { // the exit is stopping: its goodbyes went out already; this session never starts
			if r, ok := res.(*addPeerResponse); ok && r.err == nil {
				ctx.Stop(r.pid)
			}
			err = errors.New("exit shutting down")
			res = nil
		}
		if r, ok := res.(*addPeerResponse); ok {
			err = r.err
			if err == nil {
				now := time.Now()
				s := &exitSession{id: req.SessionID, clientID: req.ClientID, key: key, peer: r.pid, addrs: []netip.Addr{addr},
					lastRx: -1, lastActive: now, since: now}
				e.sessions[s.id], e.byPeer[r.pid.Id] = s, s
				ctx.Watch(r.pid)
				resp := &messages.SessionResponse{
					SessionID: req.SessionID, ExitWGPublicKey: e.cfg.PrivateKey.Public().String(),
					Endpoint: e.endpoint.String(), ClientAddresses: []string{addr.String()},
					ExitAddresses: []string{e.addr.String()}, ConnectPort: e.cfg.ConnectPort, MTU: e.cfg.MTU,
					ExitID: e.cfg.ID, ClientID: req.ClientID, Certificate: e.cfg.Certificate,
				}
				e.cfg.Identity.SignSessionResponse(resp, time.Now())
				ctx.Respond(&sessionGranted{resp: resp})
				e.cfg.Logger.Info("session opened", "session", s.id, "client", s.clientID, "address", addr)
				emit(ctx, e.cfg.Events, &messages.SessionOpened{ExitID: e.cfg.ID, SessionID: s.id, ClientID: s.clientID, ClientAddresses: s.addrs})
				if goneAlready {
					e.cfg.Logger.Info("client said goodbye during setup", "session", s.id)
					ctx.Stop(r.pid)
				} else if e.draining { // asked before the drain began: told now
					e.tellDraining(ctx, s)
				}
				return
			}
		}
		delete(e.used, addr)
		delete(e.keys, key)
		e.releaseClient(req.ClientID)
		if e.stopped() {
			refuse(messages.ErrCodeUnavailable, "%v", err)
			return
		}
		refuse(messages.ErrCodeInternal, "add peer: %v", err)
	})
}

// armSweep schedules the next idle-session sweep.
func (e *exitActor) armSweep(ctx actor.Context) {
	if e.cfg.SessionIdle <= 0 || e.stopping { // no new timer once stopping
		return
	}
	e.sweepT = sendAfter(ctx, max(e.cfg.SessionIdle/4, minCadence), &sweepSessions{})
}

// sweep releases sessions whose client has sent nothing for SessionIdle: a client that died
// without a goodbye would otherwise keep its WireGuard peer and address for the exit's lifetime.
func (e *exitActor) sweep(ctx actor.Context) {
	f := ctx.RequestFuture(e.device, &getPeerStats{}, peerStatsWait)
	reenter(ctx, f, func(res any, err error) {
		if e.stopped() {
			return
		}
		defer e.armSweep(ctx)
		st, ok := res.(*peerStats)
		if err != nil || !ok || st.err != nil {
			return
		}
		now := time.Now()
		for _, s := range e.sessions {
			rx, seen := st.rxByPeer[s.key]
			if seen && rx != s.lastRx {
				s.lastRx, s.lastActive = rx, now
				continue
			}
			if idle := now.Sub(s.lastActive); idle >= e.cfg.SessionIdle {
				e.cfg.Logger.Info("session released: client silent", "session", s.id, "client", s.clientID, "idle", idle.Round(logPrecision))
				ctx.Stop(s.peer) // Terminated frees its address and key
			}
		}
	})
}

var errPoolExhausted = errors.New("tunnel address pool exhausted")

// allocate takes the next free address of the subnet, wrapping around once.
func (e *exitActor) allocate() (netip.Addr, error) {
	first := e.cfg.Subnet.Masked().Addr().Next()
	size := 1 << min(e.cfg.Subnet.Addr().BitLen()-e.cfg.Subnet.Bits(), 20)
	a := e.next
	for range size {
		if !a.IsValid() || !e.cfg.Subnet.Contains(a) {
			a = first
		}
		if !e.used[a] && !isBroadcast(e.cfg.Subnet, a) {
			e.used[a], e.next = true, a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("%w: %s", errPoolExhausted, e.cfg.Subnet)
}

func isBroadcast(p netip.Prefix, a netip.Addr) bool {
	return a.Is4() && p.Bits() < 31 && !p.Contains(a.Next())
}

// GetExitSessions asks the exit (through the engine actor) for its client sessions; the reply is
// *ExitSessions.
type GetExitSessions struct{}

// ExitSessions answers GetExitSessions: the sessions sorted by ID, or Err (ErrNoExit from an
// engine that serves no exit).
type ExitSessions struct {
	Sessions []ExitSessionInfo
	Err      error
}

// ExitSessionInfo describes one client session of an exit.
type ExitSessionInfo struct {
	ID, ClientID string       // the session, and the client identity that holds it
	Addresses    []netip.Addr // the client's tunnel addresses
	Since        time.Time    // when it was granted
	// LastActive is when the client was last heard: its WireGuard traffic as the idle sweep
	// (every session_idle_timeout/4) saw it move, or its last sessions ping.
	LastActive time.Time
	Flows      int // forwarded connections open
}

func (e *exitActor) sessionInfos() *ExitSessions {
	out := make([]ExitSessionInfo, 0, len(e.sessions))
	for _, s := range e.sessions {
		out = append(out, ExitSessionInfo{ID: s.id, ClientID: s.clientID, Addresses: slices.Clone(s.addrs), Since: s.since,
			LastActive: s.lastActive, Flows: max(s.flows, 0)})
	}
	slices.SortFunc(out, func(a, b ExitSessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return &ExitSessions{Sessions: out}
}
