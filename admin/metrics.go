package admin

// Prometheus metrics at /metrics: a registry of the server's own (not the global one) with the Go
// and process collectors and a collector that takes one snapshot of the engine per scrape, bounded
// by scrapeTimeout. Every label comes from a closed set (states, roles, sides, end reasons,
// directions, refusal kinds, reconnection causes, TCP loss-recovery kinds): none names a tunnel, a
// slot or an exit, so the number of series does not grow with the number of tunnels
// (docs/operations.md). The warren_netstack_tcp_* series are the process's (netstack.ReadTCPStats):
// every WireGuard device's stack in the process, whichever engine runs it.

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// scrapeTimeout bounds one scrape's snapshot of the engine.
const scrapeTimeout = 5 * time.Second

// handshakeAgeBuckets: WireGuard renews a session's keys every 2 minutes of traffic; an age far
// beyond that means a tunnel that carries nothing, or a dead one.
var handshakeAgeBuckets = []float64{5, 15, 30, 60, 90, 120, 180, 300, 600, 1800}

// refusals maps engine.SignalingStats onto warren_signed_messages_refused_total{type,reason}.
var refusals = []struct {
	typ, reason string
	get         func(engine.SignalingStats) int64
}{
	{"session_request", "replayed", func(s engine.SignalingStats) int64 { return s.Replayed }},
	{"session_request", "refused", func(s engine.SignalingStats) int64 { return s.Refused }},
	{"answer", "forged", func(s engine.SignalingStats) int64 { return s.Forged }},
	{"answer", "unsigned", func(s engine.SignalingStats) int64 { return s.Unsigned }},
	{"answer", "untrusted", func(s engine.SignalingStats) int64 { return s.Untrusted }},
	{"answer", "none", func(s engine.SignalingStats) int64 { return s.Unanswered }},
	{"goodbye", "stale", func(s engine.SignalingStats) int64 { return s.Stale }},
	{"announcement", "malformed", func(s engine.SignalingStats) int64 { return s.AnnouncementsMalformed }},
	{"announcement", "forged", func(s engine.SignalingStats) int64 { return s.AnnouncementsForged }},
	{"announcement", "untrusted", func(s engine.SignalingStats) int64 { return s.AnnouncementsUntrusted }},
	{"announcement", "stale", func(s engine.SignalingStats) int64 { return s.AnnouncementsStale }},
	{"any", "backlog_full", func(s engine.SignalingStats) int64 { return s.Dropped }},
	{"any", "slow_consumer", func(s engine.SignalingStats) int64 { return s.SlowConsumer }},
}

type metrics struct {
	s          *Server
	handler    http.Handler
	snapErrors atomic.Uint64 // a statistic

	buildInfo, natsConnected, tunnels, connsActive, connsOpened, connsTotal, bytes, handshakeAge,
	transitions, reconnects, signalingRTT, exitSessions, exitFlows, exitDraining, poolSlots,
	refused, panics, childrenLost, eventsDropped, snapshotErrors, udpAssocs, udpDatagrams, udpDropped,
	tcpSegments, tcpRetransmits, tcpRecoveries, tcpSpurious, stackDrops, cookieReplies *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	m := &metrics{s: s,
		snapshotErrors: d("warren_admin_snapshot_errors_total",
			"Parts of scrapes' snapshots of the engine that failed (their series were left out of those scrapes)."),
		buildInfo:     d("warren_build_info", "Always 1; the version label names the build.", "version"),
		natsConnected: d("warren_nats_connected", "1 while the engine is connected to its NATS server."),
		tunnels:       d("warren_tunnels", "Tunnels by state: the engine's own and its pool slots' tunnels.", "state"),
		connsActive:   d("warren_connections_active", "Connections relaying or setting up now, by role (client: proxied; exit: forwarded).", "role"),
		connsOpened:   d("warren_connections_opened_total", "Connections accepted, by role.", "role"),
		connsTotal: d("warren_connections_total",
			"Ended connections by role, side (incoming, outgoing) and that side's end reason; each ended connection counts once per side.",
			"role", "side", "reason"),
		bytes: d("warren_bytes_total",
			"Bytes delivered by connections, by role and direction (in: incoming side to outgoing side, toward the destination; out: back).",
			"role", "direction"),
		handshakeAge: d("warren_handshake_age_seconds",
			"Age of each tunnel's most recent WireGuard handshake, as a distribution over the tunnels now (recomputed every scrape)."),
		transitions: d("warren_tunnel_transitions_total", "Tunnel state transitions (pool slots' tunnels included).", "from", "to"),
		reconnects:  d("warren_reconnects_total", "Reconnections started, by cause.", "cause"),
		signalingRTT: d("warren_signaling_rtt_seconds",
			"Signaling round trips: session request to verified answer, health ping to verified pong."),
		exitSessions:  d("warren_exit_sessions", "Client sessions this engine's exit holds."),
		exitFlows:     d("warren_exit_flows", "Forwarded connections open on this engine's exit."),
		exitDraining:  d("warren_exit_draining", "1 while this engine's exit drains."),
		poolSlots:     d("warren_pool_slots", "Pool slots by state.", "state"),
		refused:       d("warren_signed_messages_refused_total", "Signaling messages dropped or refused, by type and reason.", "type", "reason"),
		panics:        d("warren_actor_panics_total", "Actors that panicked and were stopped by their supervisors."),
		childrenLost:  d("warren_children_lost_total", "Actors that stopped without their parent asking."),
		eventsDropped: d("warren_events_dropped_total", "Engine events lost to a slow consumer."),
		udpAssocs: d("warren_udp_associations_total",
			"Ended SOCKS5 UDP associations, by role (client: the proxy's; exit: their exit halves); active ones are in warren_connections_active.", "role"),
		udpDatagrams: d("warren_udp_datagrams_total",
			"Datagrams moved by ended UDP associations, by role and direction (in: toward the destination; out: back).", "role", "direction"),
		udpDropped: d("warren_udp_dropped_total", "Datagrams dropped by ended UDP associations, by role and reason.", "role", "reason"),
		tcpSegments: d("warren_netstack_tcp_segments_sent_total",
			"TCP segments sent by the process's WireGuard netstacks (clients' and exits'), data and ACKs."),
		tcpRetransmits: d("warren_netstack_tcp_retransmits_total",
			"TCP segments the process's WireGuard netstacks sent again, whatever the cause."),
		tcpRecoveries: d("warren_netstack_tcp_recoveries_total",
			"TCP loss episodes in the process's WireGuard netstacks, by kind (sack, reno: recovery entered on duplicate ACKs; timeout: retransmission timer expired).",
			"kind"),
		tcpSpurious: d("warren_netstack_tcp_spurious_recoveries_total",
			"TCP loss recoveries in the process's WireGuard netstacks found afterwards to have been needless (RFC 3522)."),
		cookieReplies: d("warren_wireguard_cookie_replies_total",
			"Handshake messages the process's WireGuard devices answered with a cookie reply instead of processing them, under load (an exit's handshake queue more than an eighth full); each such sender tries again only 5 s later."),
		stackDrops: d("warren_netstack_dropped_packets_total",
			"Packets the process's WireGuard netstacks dropped themselves, by layer (transport: a connection's full segment queue, a listener's full backlog; link: the queue to the WireGuard device full for 50 ms; forwarder: a new flow's SYN while an exit had 2,048 flows of its source, or 65,536 in all, waiting for their dial).",
			"layer"),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout + 5*time.Second,
	})
	return m
}

func (m *metrics) serve(w http.ResponseWriter, r *http.Request) error {
	m.handler.ServeHTTP(w, r)
	return nil
}

// Describe sends every metric's description.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.buildInfo, m.natsConnected, m.tunnels, m.connsActive, m.connsOpened,
		m.connsTotal, m.bytes, m.handshakeAge, m.transitions, m.reconnects, m.signalingRTT, m.exitSessions,
		m.exitFlows, m.exitDraining, m.poolSlots, m.refused, m.panics, m.childrenLost, m.eventsDropped, m.snapshotErrors,
		m.udpAssocs, m.udpDatagrams, m.udpDropped, m.tcpSegments, m.tcpRetransmits, m.tcpRecoveries, m.tcpSpurious, m.stackDrops} {
		ch <- d
	}
}

func (m *metrics) failed(part string, err error) {
	m.snapErrors.Add(1)
	m.s.logger.Debug("metrics snapshot part failed", "part", part, "err", err)
}

// Collect takes one snapshot of the engine and sends it.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	ctx, cancel := context.WithTimeout(s.base, scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(m.buildInfo, 1, s.opts.Version)
	gauge(m.natsConnected, b2f(natsStatus(s.eng).Connected))
	counter(m.panics, float64(s.eng.ActorPanics()))
	counter(m.childrenLost, float64(s.eng.ChildrenLost()))
	counter(m.eventsDropped, float64(s.eng.DroppedEvents()))
	tcp := netstack.ReadTCPStats()
	counter(m.tcpSegments, float64(tcp.SegmentsSent))
	counter(m.tcpRetransmits, float64(tcp.Retransmits))
	counter(m.tcpRecoveries, float64(tcp.SACKRecoveries), "sack")
	counter(m.tcpRecoveries, float64(tcp.FastRecoveries), "reno")
	counter(m.tcpRecoveries, float64(tcp.Timeouts), "timeout")
	counter(m.tcpSpurious, float64(tcp.SpuriousRecoveries))
	counter(m.stackDrops, float64(tcp.TransportDrops), "transport")
	counter(m.stackDrops, float64(tcp.LinkDrops), "link")
	counter(m.stackDrops, float64(tcp.ForwarderDrops), "forwarder")
	counter(m.cookieReplies, float64(device.CookieRepliesSent()))
	sig := s.eng.SignalingStats()
	for _, r := range refusals {
		counter(m.refused, float64(r.get(sig)), r.typ, r.reason)
	}

	if stats, err := s.eng.Stats(ctx); err != nil {
		m.failed("stats", err)
	} else {
		for role, st := range map[string]messages.ConnectionStats{"client": stats.Client, "exit": stats.Exit} {
			gauge(m.connsActive, float64(st.Active), role)
			counter(m.connsOpened, float64(st.Opened), role)
			for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
				for _, reason := range messages.AllEndReasons {
					counter(m.connsTotal, float64(st.ByEnd[side][reason]), role, string(side), string(reason))
				}
			}
			counter(m.bytes, float64(st.Bytes.In), role, "in")
			counter(m.bytes, float64(st.Bytes.Out), role, "out")
			counter(m.udpAssocs, float64(st.UDP.Associations), role)
			counter(m.udpDatagrams, float64(st.UDP.DatagramsIn), role, "in")
			counter(m.udpDatagrams, float64(st.UDP.DatagramsOut), role, "out")
			for _, reason := range messages.AllDropReasons {
				counter(m.udpDropped, float64(st.UDP.Dropped[reason]), role, string(reason))
			}
		}
	}

	// Tunnels: the engine's own and the pool slots'.
	var infos []engine.TunnelInfo
	tunnelsOK := true
	if ts, err := s.eng.Tunnels(ctx); err != nil {
		m.failed("tunnels", err)
		tunnelsOK = false
	} else if snaps, err := snapTunnels(ctx, ts, false); err != nil {
		m.failed("tunnels", err)
		tunnelsOK = false
	} else {
		for _, sn := range snaps {
			infos = append(infos, sn.info)
		}
	}
	if p := s.pool(); p != nil {
		if slots, err := p.Slots(ctx); err != nil {
			m.failed("pool", err)
			tunnelsOK = false
		} else {
			for st, n := range slotCounts(slots).ByState {
				gauge(m.poolSlots, float64(n), st)
			}
			for _, sl := range slots {
				if sl.Tunnel.ID != "" {
					infos = append(infos, sl.Tunnel)
				}
			}
		}
	}
	if tunnelsOK {
		for st, n := range tunnelCounts(infos).ByState {
			gauge(m.tunnels, float64(n), st)
		}
		m.handshakeAges(ch, infos)
	}

	if _, ok := s.eng.Exit(); ok {
		if st, err := s.eng.ExitStatus(ctx); err != nil {
			m.failed("exit", err)
		} else {
			gauge(m.exitSessions, float64(st.Sessions))
			gauge(m.exitFlows, float64(st.Flows))
			gauge(m.exitDraining, b2f(st.Draining))
		}
	}

	{
		c := s.eng.Counters()
		for k, n := range c.Transitions {
			counter(m.transitions, float64(n), string(k.From), string(k.To))
		}
		for cause, n := range c.Reconnects {
			counter(m.reconnects, float64(n), cause)
		}
		ch <- constHistogram(m.signalingRTT, c.SignalingRTT)
	}
	counter(m.snapshotErrors, float64(m.snapErrors.Load())) // last: this scrape's failures included
}

// handshakeAges sends the distribution of the tunnels' handshake ages (tunnels with a handshake).
func (m *metrics) handshakeAges(ch chan<- prometheus.Metric, infos []engine.TunnelInfo) {
	h := engine.Histogram{Bounds: handshakeAgeBuckets, Counts: make([]uint64, len(handshakeAgeBuckets)+1)}
	now := time.Now()
	for _, in := range infos {
		last := in.LastHandshake
		if last.IsZero() {
			continue
		}
		age := max(now.Sub(last).Seconds(), 0)
		i := 0
		for i < len(h.Bounds) && age > h.Bounds[i] {
			i++
		}
		h.Counts[i]++
		h.Count++
		h.Sum += age
	}
	ch <- constHistogram(m.handshakeAge, h)
}

// constHistogram turns per-bucket counts into Prometheus' cumulative ones.
func constHistogram(d *prometheus.Desc, h engine.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
