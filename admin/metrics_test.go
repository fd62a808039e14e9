package admin_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// scrape is one parsed scrape of /metrics.
type scrape map[string]*dto.MetricFamily

func (e *env) scrape() scrape {
	e.t.Helper()
	data, err := e.c.Metrics(bounded(e.t))
	if err != nil {
		e.t.Fatalf("scrape: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		e.t.Fatalf("parse scrape: %v\n%s", err, data)
	}
	return fams
}

// value is the value of the series of name with exactly these labels (name=value pairs); ok is
// false if there is none.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// TestMetrics scrapes /metrics before and after a known number of connections through a tunnel's
// SOCKS5 proxy to a local echo server, and checks the counts by reason and the bytes exactly.
func TestMetrics(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{Version: "v1.2.3-test"})
	tun := decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", tunnelJSON("t", "x")), http.StatusCreated)
	echo := testutil.EchoServer(t)
	settle := func(client, exit uint64) engine.Stats {
		return testutil.Poll(t, 10*time.Second, "connections to end", eng.Stats, func(s engine.Stats) bool {
			return s.Client.Active == 0 && s.Exit.Active == 0 && s.Client.Ended >= client && s.Exit.Ended >= exit
		})
	}
	base := settle(0, 0) // the tunnel's first probe is a connection on the exit
	before := e.scrape()

	const n = 5
	var sent int64
	for i := range n {
		payload := testutil.PayloadBytes(uint64(i), 1000+337*i)
		socksEcho(t, tun.SOCKS, echo.Addr(), payload)
		sent += int64(len(payload))
	}
	settle(n, base.Exit.Ended+n)
	after := e.scrape()

	// The client role: these are the tunnel's only connections.
	for _, side := range []string{"incoming", "outgoing"} {
		for _, reason := range messages.AllEndReasons {
			want := 0.0
			if reason == messages.EndNormal {
				want = n
			}
			if got := after.must(t, "warren_connections_total", "role", "client", "side", side, "reason", string(reason)); got != want {
				t.Errorf("client %s %s: %v, want %v", side, reason, got, want)
			}
			// The exit role: the same connections, forwarded (after what the probe left).
			d := after.must(t, "warren_connections_total", "role", "exit", "side", side, "reason", string(reason)) -
				before.must(t, "warren_connections_total", "role", "exit", "side", side, "reason", string(reason))
			if d != want {
				t.Errorf("exit %s %s: %v more, want %v", side, reason, d, want)
			}
		}
	}
	for _, dir := range []string{"in", "out"} {
		if got := after.must(t, "warren_bytes_total", "role", "client", "direction", dir); got != float64(sent) {
			t.Errorf("client bytes %s: %v, want %d", dir, got, sent)
		}
		d := after.must(t, "warren_bytes_total", "role", "exit", "direction", dir) - before.must(t, "warren_bytes_total", "role", "exit", "direction", dir)
		if d != float64(sent) {
			t.Errorf("exit bytes %s: %v more, want %d", dir, d, sent)
		}
	}
	for name, want := range map[string]float64{
		"warren_connections_opened_total/client": n, "warren_connections_active/client": 0, "warren_connections_active/exit": 0,
	} {
		metric, role, _ := strings.Cut(name, "/")
		if got := after.must(t, metric, "role", role); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	// Tunnels by state (every state listed), the build, NATS, the exit, the refusal counters.
	for _, st := range []string{"up", "negotiating", "reconnecting", "failed", "closed"} {
		want := 0.0
		if st == "up" {
			want = 1
		}
		if got := after.must(t, "warren_tunnels", "state", st); got != want {
			t.Errorf("warren_tunnels{state=%s}: %v, want %v", st, got, want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"warren_build_info", []string{"version", "v1.2.3-test"}, 1},
		{"warren_nats_connected", nil, 1},
		{"warren_exit_sessions", nil, 1},
		{"warren_exit_draining", nil, 0},
		{"warren_signed_messages_refused_total", []string{"type", "session_request", "reason", "refused"}, 0},
		{"warren_signed_messages_refused_total", []string{"type", "announcement", "reason", "forged"}, 0},
		{"warren_actor_panics_total", nil, 0},
		{"warren_udp_associations_total", []string{"role", "client"}, 0},
		{"warren_udp_datagrams_total", []string{"role", "exit", "direction", "in"}, 0},
		{"warren_udp_dropped_total", []string{"role", "client", "reason", "foreign_source"}, 0},
	} {
		if got := after.must(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The tunnel's transitions, reconnections (none, every cause listed), its handshake, signaling.
	for _, tr := range [][2]string{{"negotiating", "handshaking"}, {"handshaking", "up"}} {
		if got := after.must(t, "warren_tunnel_transitions_total", "from", tr[0], "to", tr[1]); got != 1 {
			t.Errorf("transitions %s→%s: %v, want 1", tr[0], tr[1], got)
		}
	}
	for _, cause := range messages.ReconnectCauses {
		if got := after.must(t, "warren_reconnects_total", "cause", cause); got != 0 {
			t.Errorf("reconnects %s: %v", cause, got)
		}
	}
	if got := after.must(t, "warren_handshake_age_seconds"); got != 1 {
		t.Errorf("handshake ages: %v tunnels, want 1", got)
	}
	if got := after.must(t, "warren_signaling_rtt_seconds"); got < 1 {
		t.Errorf("signaling round trips: %v, want at least the session request", got)
	}
	if f := after["warren_signed_messages_refused_total"]; f == nil || len(f.Metric) != 13 {
		t.Errorf("refusal series: %v", f)
	}
	// The netstacks' TCP counters: the echoes crossed the tunnel's stacks, so segments were sent.
	if d := after.must(t, "warren_netstack_tcp_segments_sent_total") - before.must(t, "warren_netstack_tcp_segments_sent_total"); d <= 0 {
		t.Errorf("netstack TCP segments sent: %v more, want some", d)
	}
	after.must(t, "warren_netstack_tcp_retransmits_total")
	after.must(t, "warren_netstack_tcp_spurious_recoveries_total")
	for _, kind := range []string{"sack", "reno", "timeout"} {
		after.must(t, "warren_netstack_tcp_recoveries_total", "kind", kind)
	}
	for _, layer := range []string{"transport", "link"} {
		after.must(t, "warren_netstack_dropped_packets_total", "layer", layer)
	}
	// This test's few flows never fill an exit's forwarder.
	if got := after.must(t, "warren_netstack_dropped_packets_total", "layer", "forwarder"); got != 0 {
		t.Errorf("forwarder drops: %v, want 0", got)
	}
	// This test's few handshakes never put the exit under load.
	if got := after.must(t, "warren_wireguard_cookie_replies_total"); got != 0 {
		t.Errorf("cookie replies: %v, want 0", got)
	}
	if f := after["warren_netstack_tcp_recoveries_total"]; f == nil || len(f.Metric) != 3 {
		t.Errorf("recovery series: %v", f)
	}
	if _, ok := after["warren_pool_slots"]; ok {
		t.Error("warren_pool_slots without a pool")
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "warren_admin_snapshot_errors_total"} {
		if after[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if got := after.must(t, "warren_admin_snapshot_errors_total"); got != 0 {
		t.Errorf("snapshot errors: %v", got)
	}
	// No label names a tunnel.
	for name, f := range after {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetValue() == "t" || l.GetValue() == "x" {
					t.Errorf("%s has a label naming a tunnel or exit: %s=%s", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestMetricsScrapeBounded: a scrape of an engine that has closed answers at once, leaving out
// what could not be read and counting it.
func TestMetricsScrapeBounded(t *testing.T) {
	eng := startEngine(t, "x", nil)
	e := serve(t, eng, admin.Config{}, admin.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := e.scrape()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("scrape of a closed engine took %v", d)
	}
	if got := s.must(t, "warren_admin_snapshot_errors_total"); got < 1 {
		t.Errorf("snapshot errors: %v", got)
	}
	if _, ok := s.value("warren_connections_active", "role", "client"); ok {
		t.Error("connection series from a closed engine")
	}
	if got := s.must(t, "warren_build_info", "version", "v-test"); got != 1 {
		t.Errorf("build info: %v", got)
	}
}
