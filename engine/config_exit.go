package engine

// The exit's configuration, resolved: addresses, subnet, egress, static peers, admission limits.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
)

type resolvedExit struct {
	limits   resolvedLimits
	key      signaling.Key
	listen   netip.AddrPort
	endpoint netip.AddrPort
	subnet   netip.Prefix
	mtu      int
	port     uint16
	egress   netstack.EgressPolicy
	static   []staticPeer
	// admission limits; 0 unlimited
	maxFlows, maxSessions, burst int
	udpDests                     int
	rate                         float64
	// timers (engine.exitConfig resolves them again with the same result)
	connect, udpIdle, sessionIdle time.Duration
	announce, drain               time.Duration // 0: off
}

type staticPeer struct {
	name  string
	key   signaling.Key
	addrs []netip.Addr
}

func (x *ExitConfig) resolve() (resolvedExit, error) {
	var r resolvedExit
	var err error
	if err := signaling.ValidID(x.ID); err != nil {
		return r, fieldErr("exit.id", "%w", err)
	}
	if x.PrivateKey != "" {
		if r.key, err = signaling.ParseKey(x.PrivateKey); err != nil {
			return r, fieldErr("exit.private_key", "%w", err)
		}
	}
	listen := x.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if r.listen, err = netip.ParseAddrPort(listen); err != nil {
		return r, fieldErr("exit.listen", "want IP:port (port 0 picks a free one): %w", scrub(err, listen))
	}
	if r.listen.Addr().IsMulticast() {
		return r, fieldErr("exit.listen", "%s is a multicast address", r.listen.Addr())
	}
	if x.Endpoint != "" {
		if r.endpoint, err = netip.ParseAddrPort(x.Endpoint); err != nil {
			return r, fieldErr("exit.endpoint", "want IP:port: %w", scrub(err, x.Endpoint))
		}
		if r.endpoint.Addr().IsUnspecified() || r.endpoint.Addr().IsMulticast() || r.endpoint.Port() == 0 {
			return r, fieldErr("exit.endpoint", "must be a reachable address and port, not %s", r.endpoint)
		}
	} else if r.listen.Addr().IsUnspecified() {
		return r, fieldErr("exit.endpoint", "required when exit.listen is %s (clients cannot dial it)", r.listen.Addr())
	}
	subnet := x.Subnet
	if subnet == "" {
		subnet = DefaultSubnet
	}
	if r.subnet, err = netip.ParsePrefix(subnet); err != nil {
		return r, fieldErr("exit.subnet", "%w", scrub(err, subnet))
	}
	if err := checkSubnet(r.subnet); err != nil {
		return r, err
	}
	r.mtu = x.MTU
	if r.mtu == 0 {
		r.mtu = netstack.DefaultMTU
	}
	if r.mtu < 1280 || r.mtu > 9000 {
		return r, fieldErr("exit.mtu", "%d not in [1280, 9000]", r.mtu)
	}
	r.port = x.ConnectPort
	if r.port == 0 {
		r.port = DefaultConnectPort
	}
	if r.connect, err = durationIn("exit.connect_timeout", x.ConnectTimeout, DefaultConnectTimeout, minTimeout, maxTimeout, false); err != nil {
		return r, err
	}
	if r.udpIdle, err = durationIn("exit.udp_idle_timeout", x.UDPIdleTimeout, DefaultUDPIdleTimeout, time.Second, 24*time.Hour, false); err != nil {
		return r, err
	}
	if r.sessionIdle, err = durationIn("exit.session_idle_timeout", x.SessionIdleTimeout, 3*time.Minute, time.Second, 24*time.Hour, true); err != nil {
		return r, err
	}
	e := x.Egress
	r.egress = netstack.EgressPolicy{AllowLoopback: e.AllowLoopback, AllowPrivate: e.AllowPrivate,
		AllowLinkLocal: e.AllowLinkLocal, AllowCGNAT: e.AllowCGNAT, AllowMulticast: e.AllowMulticast,
		AllowDocumentation: e.AllowDocumentation, AllowBenchmarking: e.AllowBenchmarking, AllowReserved: e.AllowReserved}
	for i, s := range e.Allow {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return r, fieldErr(fmt.Sprintf("exit.egress.allow[%d]", i), "%w", scrub(err, s))
		}
		r.egress.Allow = append(r.egress.Allow, p)
	}
	for i, s := range e.Deny {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return r, fieldErr(fmt.Sprintf("exit.egress.deny[%d]", i), "%w", scrub(err, s))
		}
		r.egress.Deny = append(r.egress.Deny, p)
	}
	if len(x.StaticPeers) > 0 && x.PrivateKey == "" {
		return r, fieldErr("exit.private_key", "required with static_peers: their configs name the exit's public key")
	}
	for i, sp := range x.StaticPeers {
		path := fmt.Sprintf("exit.static_peers[%d]", i)
		p := staticPeer{name: sp.Name}
		if p.name == "" {
			p.name = "static-" + strconv.Itoa(i)
		}
		if p.key, err = signaling.ParseKey(sp.PublicKey); err != nil {
			return r, fieldErr(path+".public_key", "%w", err)
		}
		if len(sp.AllowedIPs) == 0 {
			return r, fieldErr(path+".allowed_ips", "at least one address")
		}
		for j, s := range sp.AllowedIPs {
			pf, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return r, fieldErr(fmt.Sprintf("%s.allowed_ips[%d]", path, j), "%w", scrub(err, s))
				}
				pf = netip.PrefixFrom(a, a.BitLen())
			}
			if !pf.IsSingleIP() {
				return r, fieldErr(fmt.Sprintf("%s.allowed_ips[%d]", path, j), "%s: give the peer's own address (/32 or /128)", pf)
			}
			p.addrs = append(p.addrs, pf.Addr())
		}
		r.static = append(r.static, p)
	}
	if err := checkStaticPeers(x, &r); err != nil {
		return r, err
	}
	if r.limits, err = x.Connections.resolve("exit.connections"); err != nil {
		return r, err
	}
	if r.udpDests, err = countIn("exit.udp_max_destinations", x.UDPMaxDestinations, DefaultUDPDestinations, maxConns, "unlimited"); err != nil {
		return r, err
	}
	if r.maxFlows, err = countIn("exit.max_connections_per_session", x.MaxConnectionsPerSession, DefaultMaxConnectionsPerSession, maxConns, "unlimited"); err != nil {
		return r, err
	}
	if r.maxSessions, err = countIn("exit.max_sessions_per_client", x.MaxSessionsPerClient, DefaultMaxSessionsPerClient, maxSessions, "unlimited"); err != nil {
		return r, err
	}
	if r.rate, err = checkRate(x.RequestsPerSecond); err != nil {
		return r, err
	}
	if r.burst, err = countIn("exit.request_burst", x.RequestBurst, DefaultRequestBurst, int(maxRate), "unlimited"); err != nil {
		return r, err
	}
	if r.rate > 0 && r.burst == 0 {
		return r, fieldErr("exit.request_burst", "-1 (unlimited) makes no sense with a request rate: give a burst of at least 1")
	}
	for i, id := range x.AllowedClients {
		if err := signaling.ValidIdentity(id); err != nil {
			return r, fieldErr(fmt.Sprintf("exit.allowed_clients[%d]", i), "%w", err)
		}
	}
	if err := signaling.ValidLabels(x.Labels); err != nil {
		return r, fieldErr("exit.labels", "%s", strings.TrimPrefix(err.Error(), signaling.ErrInvalid.Error()+": "))
	}
	if r.announce, err = durationIn("exit.announce_interval", x.AnnounceInterval, DefaultAnnounceInterval,
		signaling.MinAnnounceInterval, signaling.MaxAnnounceInterval, true); err != nil {
		return r, err
	}
	if r.drain, err = durationIn("exit.drain_timeout", x.DrainTimeout, DefaultExitDrainTimeout, time.Millisecond, time.Hour, true); err != nil {
		return r, err
	}
	return r, nil
}
