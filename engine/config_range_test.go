package engine

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/signaling"
)

const (
	testExitKey = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
	testPeerKey = "JqdiTCD2Vj7oFLy5iK2zdXq5kSusVRynuCcxarLLKUg="
	// testPeerKey2 is another valid public key.
	testPeerKey2 = "l+3lX3cVKW1x9dmXr9nak1fN2DPOtpDjddTYcyXk6A0="
)

func rangeBase() Config {
	return Config{
		Exit:    &ExitConfig{ID: "x", PrivateKey: testExitKey},
		Tunnels: []TunnelSpec{{Exit: "x", SOCKS: "127.0.0.1:0"}},
	}
}

func d(s string) Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration(v)
}

// wantField checks that err is a FieldError for field whose message names it.
func wantField(t *testing.T, name string, err error, field string, also ...string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("%s: got %v, want a FieldError for %s", name, err, field)
		return
	}
	for _, s := range append([]string{field + ":"}, also...) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: message %q does not say %q", name, err, s)
		}
	}
}

// TestValidateRanges: every numeric and duration field refuses values outside its documented
// range and special values other than the documented ones, and accepts its bounds.
func TestValidateRanges(t *testing.T) {
	type mut = func(*Config)
	tun := func(f func(*TunnelSpec)) mut { return func(c *Config) { f(&c.Tunnels[0]) } }
	exit := func(f func(*ExitConfig)) mut { return func(c *Config) { f(c.Exit) } }
	bad := []struct {
		field string
		m     mut
	}{
		{"nats.connect_timeout", func(c *Config) { c.NATS.ConnectTimeout = d("-1s") }},
		{"nats.connect_timeout", func(c *Config) { c.NATS.ConnectTimeout = d("1ms") }},
		{"nats.connect_timeout", func(c *Config) { c.NATS.ConnectTimeout = d("1h") }},
		{"exit.mtu", exit(func(x *ExitConfig) { x.MTU = -1 })},
		{"exit.mtu", exit(func(x *ExitConfig) { x.MTU = 9001 })},
		{"exit.connect_timeout", exit(func(x *ExitConfig) { x.ConnectTimeout = d("-10s") })},
		{"exit.connect_timeout", exit(func(x *ExitConfig) { x.ConnectTimeout = d("10m") })},
		{"exit.udp_idle_timeout", exit(func(x *ExitConfig) { x.UDPIdleTimeout = d("-1s") })},
		{"exit.udp_idle_timeout", exit(func(x *ExitConfig) { x.UDPIdleTimeout = d("100ms") })},
		{"exit.udp_idle_timeout", exit(func(x *ExitConfig) { x.UDPIdleTimeout = d("25h") })},
		{"exit.session_idle_timeout", exit(func(x *ExitConfig) { x.SessionIdleTimeout = d("500ms") })},
		{"exit.session_idle_timeout", exit(func(x *ExitConfig) { x.SessionIdleTimeout = d("1000h") })},
		{"exit.max_sessions_per_client", exit(func(x *ExitConfig) { x.MaxSessionsPerClient = -5 })},
		{"exit.max_sessions_per_client", exit(func(x *ExitConfig) { x.MaxSessionsPerClient = 65537 })},
		{"exit.requests_per_second", exit(func(x *ExitConfig) { x.RequestsPerSecond = -5 })},
		{"exit.requests_per_second", exit(func(x *ExitConfig) { x.RequestsPerSecond = math.NaN() })},
		{"exit.requests_per_second", exit(func(x *ExitConfig) { x.RequestsPerSecond = math.Inf(1) })},
		{"exit.requests_per_second", exit(func(x *ExitConfig) { x.RequestsPerSecond = 1e-9 })},
		{"exit.request_burst", exit(func(x *ExitConfig) { x.RequestBurst = -2 })},
		{"exit.request_burst", exit(func(x *ExitConfig) { x.RequestBurst = 2e6 })},
		{"exit.max_connections_per_session", exit(func(x *ExitConfig) { x.MaxConnectionsPerSession = -5 })},
		{"exit.max_connections_per_session", exit(func(x *ExitConfig) { x.MaxConnectionsPerSession = 2e6 })},
		{"exit.announce_interval", exit(func(x *ExitConfig) { x.AnnounceInterval = d("10ms") })},
		{"exit.announce_interval", exit(func(x *ExitConfig) { x.AnnounceInterval = d("11m") })},
		{"exit.drain_timeout", exit(func(x *ExitConfig) { x.DrainTimeout = d("500us") })},
		{"exit.drain_timeout", exit(func(x *ExitConfig) { x.DrainTimeout = d("2h") })},
		{"exit.connections.idle_timeout", exit(func(x *ExitConfig) { x.Connections.IdleTimeout = d("1ms") })},
		{"exit.connections.close_grace", exit(func(x *ExitConfig) { x.Connections.CloseGrace = d("-1s") })},
		{"exit.connections.max_lifetime", exit(func(x *ExitConfig) { x.Connections.MaxLifetime = d("-1s") })},
		{"exit.connections.keepalive_idle_timeout", exit(func(x *ExitConfig) { x.Connections.KeepaliveIdleTimeout = d("-1s") })},
		{"tunnels[0].handshake_timeout", tun(func(s *TunnelSpec) { s.HandshakeTimeout = d("-1s") })},
		{"tunnels[0].handshake_timeout", tun(func(s *TunnelSpec) { s.HandshakeTimeout = d("1h") })},
		{"tunnels[0].connect_timeout", tun(func(s *TunnelSpec) { s.ConnectTimeout = d("5ns") })},
		{"tunnels[0].drain_timeout", tun(func(s *TunnelSpec) { s.DrainTimeout = d("-1s") })},
		{"tunnels[0].drain_timeout", tun(func(s *TunnelSpec) { s.DrainTimeout = d("2h") })},
		{"tunnels[0].keepalive", tun(func(s *TunnelSpec) { s.Keepalive = -5 })},
		{"tunnels[0].keepalive", tun(func(s *TunnelSpec) { s.Keepalive = 65536 })},
		{"tunnels[0].max_connections", tun(func(s *TunnelSpec) { s.MaxConnections = -5 })},
		{"tunnels[0].max_connections", tun(func(s *TunnelSpec) { s.MaxConnections = 1_000_001 })},
		{"tunnels[0].max_connections_per_source", tun(func(s *TunnelSpec) { s.MaxConnectionsPerSource = -1 })},
		{"tunnels[0].max_connections_per_source", tun(func(s *TunnelSpec) { s.MaxConnectionsPerSource = 1_000_001 })},
		{"tunnels[0].connections.idle_timeout", tun(func(s *TunnelSpec) { s.Connections.IdleTimeout = d("1000h") })},
		{"tunnels[0].connections.keepalive_idle_timeout", tun(func(s *TunnelSpec) { s.Connections.KeepaliveIdleTimeout = d("50ms") })},
		{"tunnels[0].connections.max_lifetime", tun(func(s *TunnelSpec) { s.Connections.MaxLifetime = d("-1s") })},
		{"tunnels[0].connections.max_lifetime", tun(func(s *TunnelSpec) { s.Connections.MaxLifetime = d("9000h") })},
		{"tunnels[0].connections.close_grace", tun(func(s *TunnelSpec) { s.Connections.CloseGrace = d("-1s") })},
		{"tunnels[0].connections.close_grace", tun(func(s *TunnelSpec) { s.Connections.CloseGrace = d("2m") })},
		{"tunnels[0].health.interval", tun(func(s *TunnelSpec) { s.Health.Interval = d("1000h") })},
		{"tunnels[0].health.interval", tun(func(s *TunnelSpec) { s.Health.Interval = d("-1s") })},
		{"tunnels[0].health.interval", tun(func(s *TunnelSpec) { s.Health.Interval = 5 })}, // `interval: 5` is 5ns
		{"tunnels[0].health.probe_timeout", tun(func(s *TunnelSpec) { s.Health.ProbeTimeout = d("2m") })},
		{"tunnels[0].health.probe_timeout", tun(func(s *TunnelSpec) { s.Health.Interval, s.Health.ProbeTimeout = d("1s"), d("1s") })},
		{"tunnels[0].health.failures", tun(func(s *TunnelSpec) { s.Health.Failures = -1 })},
		{"tunnels[0].health.failures", tun(func(s *TunnelSpec) { s.Health.Failures = 101 })},
		{"tunnels[0].health.signaling_interval", tun(func(s *TunnelSpec) { s.Health.SignalingInterval = d("1h") })},
		{"tunnels[0].health.signaling_timeout", tun(func(s *TunnelSpec) { s.Health.SignalingTimeout = d("-2s") })},
		{"tunnels[0].health.signaling_failures", tun(func(s *TunnelSpec) { s.Health.SignalingFailures = -3 })},
		{"tunnels[0].health.reconnect_wait", tun(func(s *TunnelSpec) { s.Health.ReconnectWait = d("-1s") })},
		{"tunnels[0].health.reconnect_wait", tun(func(s *TunnelSpec) { s.Health.ReconnectWait = d("1h") })},
		{"tunnels[0].health.backoff_min", tun(func(s *TunnelSpec) { s.Health.BackoffMin = d("1ms") })},
		{"tunnels[0].health.backoff_max", tun(func(s *TunnelSpec) { s.Health.BackoffMax = d("2h") })},
		{"tunnels[0].health.backoff_max", tun(func(s *TunnelSpec) { s.Health.BackoffMin, s.Health.BackoffMax = d("30s"), d("20s") })},
	}
	for i, tc := range bad {
		c := rangeBase()
		tc.m(&c)
		if i == len(bad)-1 {
			wantField(t, tc.field, c.Validate(), tc.field, "below backoff_min")
			continue
		}
		wantField(t, tc.field, c.Validate(), tc.field, "not in")
	}

	good := map[string]mut{
		"bounds, low": func(c *Config) {
			c.NATS.ConnectTimeout = d("100ms")
			x := c.Exit
			x.MTU, x.ConnectTimeout, x.UDPIdleTimeout, x.SessionIdleTimeout = 1280, d("100ms"), d("1s"), d("1s")
			x.MaxSessionsPerClient, x.RequestsPerSecond, x.RequestBurst, x.MaxConnectionsPerSession = 1, 0.001, 1, 1
			x.AnnounceInterval, x.DrainTimeout = d("50ms"), d("1ms")
			x.Connections = ConnLimits{IdleTimeout: d("100ms"), KeepaliveIdleTimeout: d("100ms"), MaxLifetime: d("100ms"), CloseGrace: d("1ms")}
			s := &c.Tunnels[0]
			s.HandshakeTimeout, s.ConnectTimeout, s.DrainTimeout, s.Keepalive = d("100ms"), d("100ms"), d("1ms"), 1
			s.MaxConnections, s.MaxConnectionsPerSource = 1, 1
			s.Health = HealthConfig{Interval: d("50ms"), ProbeTimeout: d("10ms"), Failures: 1, SignalingInterval: d("50ms"),
				SignalingTimeout: d("10ms"), SignalingFailures: 1, ReconnectWait: d("10ms"), BackoffMin: d("10ms"), BackoffMax: d("10ms")}
		},
		"bounds, high": func(c *Config) {
			c.NATS.ConnectTimeout = d("5m")
			x := c.Exit
			x.MTU, x.ConnectTimeout, x.UDPIdleTimeout, x.SessionIdleTimeout = 9000, d("5m"), d("24h"), d("24h")
			x.MaxSessionsPerClient, x.RequestsPerSecond, x.RequestBurst, x.MaxConnectionsPerSession = 65536, 1e6, 1e6, 1e6
			x.AnnounceInterval, x.DrainTimeout = d("10m"), d("1h")
			x.Connections = ConnLimits{IdleTimeout: d("168h"), KeepaliveIdleTimeout: d("168h"), MaxLifetime: d("8760h"), CloseGrace: d("1m")}
			s := &c.Tunnels[0]
			s.HandshakeTimeout, s.ConnectTimeout, s.DrainTimeout, s.Keepalive = d("5m"), d("5m"), d("1h"), 65535
			s.MaxConnections, s.MaxConnectionsPerSource = 1e6, 1e6
			s.Health = HealthConfig{Interval: d("1m"), ProbeTimeout: d("59s"), Failures: 100, SignalingInterval: d("5m"),
				SignalingTimeout: d("1m"), SignalingFailures: 100, ReconnectWait: d("5m"), BackoffMin: d("1m"), BackoffMax: d("1h")}
		},
		"special values": func(c *Config) {
			x := c.Exit
			x.SessionIdleTimeout, x.Connections.IdleTimeout = d("-1s"), d("-1ns") // never, off
			x.MaxSessionsPerClient, x.RequestsPerSecond, x.MaxConnectionsPerSession = -1, -1, -1
			x.AnnounceInterval, x.DrainTimeout = d("-1s"), d("-1s") // off, none
			s := &c.Tunnels[0]
			s.Keepalive, s.MaxConnections, s.Connections.IdleTimeout = -1, -1, d("-5m")
		},
	}
	for name, m := range good {
		c := rangeBase()
		m(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// What the special values resolve to.
	c := rangeBase()
	good["special values"](&c)
	r, err := c.Tunnels[0].resolve("t", 0)
	if err != nil || r.keepalive != 0 || r.maxConns != 0 || r.limits.idle != 0 {
		t.Errorf("special values resolve to keepalive %d, max_connections %d, idle %v (%v); want 0 (off/unlimited)", r.keepalive, r.maxConns, r.limits.idle, err)
	}
	x, err := c.Exit.resolve()
	if err != nil || x.sessionIdle != 0 || x.maxSessions != 0 || x.rate != 0 || x.maxFlows != 0 || x.announce != 0 || x.drain != 0 {
		t.Errorf("exit special values: %+v, %v", x, err)
	}
	// And the defaults of the exit's announcements and drain.
	if x, err := rangeBase().Exit.resolve(); err != nil || x.announce != DefaultAnnounceInterval || x.drain != DefaultExitDrainTimeout {
		t.Errorf("exit defaults: announce %v, drain %v (%v); want %v, %v", x.announce, x.drain, err, DefaultAnnounceInterval, DefaultExitDrainTimeout)
	}
}

// TestValidateExitLabels: labels are checked as announced (signaling.ValidLabels); the error names
// exit.labels and what is wrong, and a good set passes.
func TestValidateExitLabels(t *testing.T) {
	for name, tc := range map[string]struct {
		labels map[string]string
		also   string
	}{
		"key with a space": {map[string]string{"the region": "eu"}, "label key"},
		"upper-case key":   {map[string]string{"Region": "eu"}, "label key"},
		"long key":         {map[string]string{strings.Repeat("k", 33): "eu"}, "label key"},
		"value with comma": {map[string]string{"region": "eu,us"}, "value"},
		"long value":       {map[string]string{"region": strings.Repeat("v", 65)}, "value"},
		"too many":         {manyLabels(17), "limit 16"},
	} {
		c := rangeBase()
		c.Exit.Labels = tc.labels
		wantField(t, name, c.Validate(), "exit.labels", tc.also)
	}
	c := rangeBase()
	c.Exit.Labels = manyLabels(16)
	c.Exit.Labels["region"], c.Exit.Labels["empty"] = "eu-west_1.a:b/c", ""
	delete(c.Exit.Labels, "l0")
	delete(c.Exit.Labels, "l1")
	if err := c.Validate(); err != nil {
		t.Errorf("16 good labels: %v", err)
	}
}

func manyLabels(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("l%d", i)] = "v"
	}
	return m
}

// TestValidateListens: proxies' listen addresses are IP literals with ports 0-65535, and no two
// listeners of the config (all tunnels' proxies, the embedded NATS server's) clash; the error
// names both fields.
func TestValidateListens(t *testing.T) {
	two := func(a, b string) Config {
		c := rangeBase()
		c.Tunnels = []TunnelSpec{{Name: "a", Exit: "x", SOCKS: a}, {Name: "b", Exit: "x", HTTP: b}}
		for i := range c.Tunnels { // the proxies' authentication is not what is checked here
			c.Tunnels[i].Auth.AllowUnauthenticated = true
		}
		return c
	}
	cases := []struct {
		name  string
		c     Config
		field string
		also  []string
	}{
		{"same address across tunnels", two("127.0.0.1:1080", "127.0.0.1:1080"), "tunnels[1].http", []string{"tunnels[0].socks"}},
		{"mapped form of the same address", two("127.0.0.1:1080", "[::ffff:127.0.0.1]:1080"), "tunnels[1].http", []string{"tunnels[0].socks"}},
		{"wildcard takes every address", two("0.0.0.0:1080", "127.0.0.1:1080"), "tunnels[1].http", []string{"tunnels[0].socks"}},
		{"IPv6 wildcard too", two("[::1]:1080", "[::]:1080"), "tunnels[1].http", []string{"tunnels[0].socks"}},
		{"IPv4 wildcard is dual-stack", two("[::1]:1080", "0.0.0.0:1080"), "tunnels[1].http", []string{"tunnels[0].socks"}},
		{"socks and http of one tunnel", func() Config {
			c := rangeBase()
			c.Tunnels[0].SOCKS, c.Tunnels[0].HTTP = "127.0.0.1:1080", "127.0.0.1:1080"
			return c
		}(), "tunnels[0].http", []string{"tunnels[0].socks"}},
		{"the embedded NATS listener", func() Config {
			c := two("127.0.0.1:4222", "127.0.0.1:8080")
			c.NATS.EmbeddedListen = "127.0.0.1:4222"
			c.Exit.Open = true
			c.Trust.AnyExit = true
			return c
		}(), "tunnels[0].socks", []string{"nats.embedded_listen"}},
		{"port over 65535", two("127.0.0.1:65536", "127.0.0.1:0"), "tunnels[0].socks", []string{"65536", "0-65535"}},
		{"negative port", two("127.0.0.1:-1", "127.0.0.1:0"), "tunnels[0].socks", []string{"0-65535"}},
		{"named port", two("127.0.0.1:socks", "127.0.0.1:0"), "tunnels[0].socks", []string{"0-65535"}},
		{"host name", two("proxy.example.com:1080", "127.0.0.1:0"), "tunnels[0].socks", []string{"not an IP address"}},
		{"localhost", two("127.0.0.1:0", "localhost:8080"), "tunnels[1].http", []string{"not an IP address"}},
		{"no host", two("127.0.0.1:0", ":8080"), "tunnels[1].http", []string{"0.0.0.0"}},
		{"no port", two("127.0.0.1", "127.0.0.1:0"), "tunnels[0].socks", nil},
	}
	for _, tc := range cases {
		wantField(t, tc.name, tc.c.Validate(), tc.field, tc.also...)
	}
	for name, c := range map[string]Config{
		"port 0 twice":        two("127.0.0.1:0", "127.0.0.1:0"),
		"different addresses": two("127.0.0.1:1080", "127.0.0.2:1080"),
		"different ports":     two("0.0.0.0:1080", "0.0.0.0:1081"),
		"IPv6 literal":        two("[::1]:1080", "[fe80::1%lo]:1080"),
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestValidateSubnetAndStaticPeers: the subnet is private or CGNAT (/8-/30) or unique local
// (/48-/126); static peers lie inside it, off the exit's, network and broadcast addresses, and
// overlap nothing.
func TestValidateSubnetAndStaticPeers(t *testing.T) {
	for _, s := range []string{"0.0.0.0/0", "10.0.0.0/7", "10.0.0.0/31", "10.0.0.0/32", "8.8.8.0/24", "172.16.0.0/11",
		"100.0.0.0/8", "192.0.2.0/24", "::/0", "2001:db8::/64", "fd00::/40", "fd00::/127", "::ffff:10.0.0.0/104", "nonsense"} {
		c := rangeBase()
		c.Exit.Subnet = s
		wantField(t, s, c.Validate(), "exit.subnet")
	}
	for _, s := range []string{"10.0.0.0/8", "10.77.0.0/16", "172.16.0.0/12", "192.168.7.0/24", "100.64.0.0/10",
		"100.100.100.0/30", "fd00:1:2:3::/64", "fd00::/48", "fdff::/126", "10.77.0.1/16"} {
		c := rangeBase()
		c.Exit.Subnet = s
		if err := c.Validate(); err != nil {
			t.Errorf("subnet %s: %v", s, err)
		}
	}

	exitKey, err := signaling.ParseKey(testExitKey)
	if err != nil {
		t.Fatal(err)
	}
	exitPub := exitKey.Public()
	peers := func(ps ...StaticPeer) Config {
		c := rangeBase()
		c.Exit.Subnet = "10.77.0.0/24"
		c.Exit.StaticPeers = ps
		return c
	}
	p1 := func(ips ...string) StaticPeer {
		return StaticPeer{Name: "one", PublicKey: testPeerKey, AllowedIPs: ips}
	}
	p2 := func(ips ...string) StaticPeer {
		return StaticPeer{Name: "two", PublicKey: testPeerKey2, AllowedIPs: ips}
	}
	cases := []struct {
		name, field string
		c           Config
		also        []string
	}{
		{"outside the subnet", "exit.static_peers[0].allowed_ips[0]", peers(p1("10.78.0.2/32")), []string{"outside"}},
		{"other family", "exit.static_peers[0].allowed_ips[1]", peers(p1("10.77.0.2", "fd00::2/128")), []string{"outside"}},
		{"the exit's own address", "exit.static_peers[0].allowed_ips[0]", peers(p1("10.77.0.1/32")), []string{"exit's own"}},
		{"network address", "exit.static_peers[0].allowed_ips[0]", peers(p1("10.77.0.0/32")), []string{"network"}},
		{"broadcast address", "exit.static_peers[0].allowed_ips[0]", peers(p1("10.77.0.255/32")), []string{"broadcast"}},
		{"same address twice", "exit.static_peers[1].allowed_ips[0]", peers(p1("10.77.0.2/32"), p2("10.77.0.2/32")),
			[]string{"exit.static_peers[0].allowed_ips[0]"}},
		{"same address in one peer", "exit.static_peers[0].allowed_ips[1]", peers(p1("10.77.0.2/32", "10.77.0.2")),
			[]string{"exit.static_peers[0].allowed_ips[0]"}},
		{"same key twice", "exit.static_peers[1].public_key", peers(p1("10.77.0.2"), StaticPeer{Name: "two", PublicKey: testPeerKey,
			AllowedIPs: []string{"10.77.0.3"}}), []string{"exit.static_peers[0].public_key"}},
		{"the exit's own key", "exit.static_peers[0].public_key", peers(StaticPeer{PublicKey: exitPub.String(),
			AllowedIPs: []string{"10.77.0.2"}}), []string{"exit's own"}},
		{"same name twice", "exit.static_peers[1].name", peers(p1("10.77.0.2"), StaticPeer{Name: "one", PublicKey: testPeerKey2,
			AllowedIPs: []string{"10.77.0.3"}}), []string{"exit.static_peers[0].name"}},
		{"bad name", "exit.static_peers[0].name", peers(StaticPeer{Name: "my laptop", PublicKey: testPeerKey, AllowedIPs: []string{"10.77.0.2"}}), nil},
	}
	for _, tc := range cases {
		wantField(t, tc.name, tc.c.Validate(), tc.field, tc.also...)
	}
	good := peers(p1("10.77.0.2/32", "10.77.0.254"), p2("10.77.0.3"))
	if err := good.Validate(); err != nil {
		t.Errorf("good static peers: %v", err)
	}
}

// TestValidateExitLists: a tunnel's exit and failover exits are distinct; pins' keys are exit ids.
func TestValidateExitLists(t *testing.T) {
	c := rangeBase()
	c.Tunnels[0].Exits = []string{"y", "x"}
	wantField(t, "exit repeated in exits", c.Validate(), "tunnels[0].exits[1]", "tunnels[0].exit")
	c = rangeBase()
	c.Tunnels[0].Exits = []string{"y", "z", "y"}
	wantField(t, "failover exit twice", c.Validate(), "tunnels[0].exits[2]", "tunnels[0].exits[0]")
	c = rangeBase()
	c.Tunnels[0].Pins = map[string]string{"not an id": "x"}
	wantField(t, "pin key", c.Validate(), "tunnels[0].pins")
}

// TestValidateNATSURLs: one server per entry, a scheme nats.go knows, a host, a port in range;
// a URL (which may hold a password) is never repeated.
func TestValidateNATSURLs(t *testing.T) {
	for i, u := range []string{"http://nats.example.net", "nats://a:4222,nats://b:4222", "nats://:4222",
		"nats://secret:pw@h:99999", "nats://h:0"} {
		c := Config{NATS: NATSConfig{URLs: []string{u}}}
		err := c.Validate()
		wantField(t, u, err, "nats.urls[0]")
		if err != nil && i == 3 && strings.Contains(err.Error(), "pw") {
			t.Errorf("message repeats the URL: %v", err)
		}
	}
	c := Config{NATS: NATSConfig{URLs: []string{"ws://a:80", "nats://b:4222"}}}
	wantField(t, "mixed", c.Validate(), "nats.urls")
	for _, u := range []string{"nats://127.0.0.1:4222", "tls://nats.example.net", "127.0.0.1:4222", "wss://h", "nats://u:p@[::1]:4222"} {
		if err := (&Config{NATS: NATSConfig{URLs: []string{u}}}).Validate(); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// TestValidateConfigFiles: files a config names must be small regular files (a device would hang
// the check).
func TestValidateConfigFiles(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.pem")
	if err := os.WriteFile(big, make([]byte, maxConfigFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for field, n := range map[string]NATSConfig{
		"nats.tls.ca_file":       {URLs: []string{"tls://h"}, TLS: NATSTLSConfig{CAFile: os.DevNull}},
		"nats.nkey_seed_file":    {URLs: []string{"tls://h"}, NKeySeedFile: os.DevNull},
		"nats.credentials_file":  {URLs: []string{"tls://h"}, CredentialsFile: t.TempDir()},
		"nats.tls.cert_file":     {URLs: []string{"tls://h"}, TLS: NATSTLSConfig{CertFile: big, KeyFile: big}},
		"nats.tls.ca_file (big)": {URLs: []string{"tls://h"}, TLS: NATSTLSConfig{CAFile: big}},
	} {
		err := (&Config{NATS: n}).Validate()
		wantField(t, field, err, strings.TrimSuffix(field, " (big)"))
	}
}

// TestValidateEgressSwitches: every egress switch reaches the policy.
func TestValidateEgressSwitches(t *testing.T) {
	x := &ExitConfig{ID: "x", Egress: EgressConfig{AllowLoopback: true, AllowPrivate: true, AllowLinkLocal: true, AllowCGNAT: true,
		AllowMulticast: true, AllowDocumentation: true, AllowBenchmarking: true, AllowReserved: true,
		Allow: []string{"192.0.2.0/24"}, Deny: []string{"198.51.100.0/24"}}}
	r, err := x.resolve()
	if err != nil {
		t.Fatal(err)
	}
	p := r.egress
	if !p.AllowLoopback || !p.AllowPrivate || !p.AllowLinkLocal || !p.AllowCGNAT || !p.AllowMulticast ||
		!p.AllowDocumentation || !p.AllowBenchmarking || !p.AllowReserved || len(p.Allow) != 1 || len(p.Deny) != 1 {
		t.Fatalf("policy %+v", p)
	}
}

// TestConfigErrorsEchoAShortPrefix: a 10 MB value in any field is named in a short message that
// repeats only a prefix of it.
func TestConfigErrorsEchoAShortPrefix(t *testing.T) {
	huge := strings.Repeat("Z", 10<<20)
	cases := map[string]func(*Config){
		"identity":                        func(c *Config) { c.Identity = huge },
		"log_level":                       func(c *Config) { c.LogLevel = huge },
		"nats.urls[0]":                    func(c *Config) { c.NATS.URLs = []string{"nats://" + huge} },
		"nats.embedded_listen":            func(c *Config) { c.NATS.EmbeddedListen = huge },
		"nats.embedded_host":              func(c *Config) { c.NATS.EmbeddedHost = huge },
		"nats.tls.ca_file":                func(c *Config) { c.NATS.URLs, c.NATS.TLS.CAFile = []string{"tls://h"}, huge },
		"exit.id":                         func(c *Config) { c.Exit.ID = huge },
		"exit.listen":                     func(c *Config) { c.Exit.Listen = huge },
		"exit.endpoint":                   func(c *Config) { c.Exit.Endpoint = huge },
		"exit.subnet":                     func(c *Config) { c.Exit.Subnet = huge },
		"exit.egress.allow[0]":            func(c *Config) { c.Exit.Egress.Allow = []string{huge} },
		"exit.egress.deny[0]":             func(c *Config) { c.Exit.Egress.Deny = []string{"1.2.3.4/" + huge} },
		"exit.allowed_clients[0]":         func(c *Config) { c.Exit.AllowedClients = []string{huge} },
		"exit.connections.idle_exempt[0]": func(c *Config) { c.Exit.Connections.IdleExempt = []string{huge} },
		"tunnels[0].name":                 func(c *Config) { c.Tunnels[0].Name = huge },
		"tunnels[0].exit":                 func(c *Config) { c.Tunnels[0].Exit = huge },
		"tunnels[0].socks":                func(c *Config) { c.Tunnels[0].SOCKS = huge },
		"tunnels[0].http":                 func(c *Config) { c.Tunnels[0].HTTP = huge + ":1" },
		"tunnels[0].udp_bind":             func(c *Config) { c.Tunnels[0].UDPBind = huge },
		"tunnels[0].exits[0]":             func(c *Config) { c.Tunnels[0].Exits = []string{huge} },
		"tunnels[0].pins":                 func(c *Config) { c.Tunnels[0].Pins = map[string]string{huge: "x"} },
		"exit.static_peers[0].allowed_ips[0]": func(c *Config) {
			c.Exit.StaticPeers = []StaticPeer{{PublicKey: testPeerKey, AllowedIPs: []string{huge}}}
		},
	}
	for field, m := range cases {
		c := rangeBase()
		m(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: got %.200v", field, err)
			continue
		}
		if msg := err.Error(); len(msg) > 400 || longestRun(msg, 'Z') > echoLimit {
			t.Errorf("%s: %d-byte message: %.500s", field, len(msg), msg)
		}
	}
	var v Duration
	if err := v.UnmarshalText([]byte(huge)); err == nil || len(err.Error()) > 200 || longestRun(err.Error(), 'Z') > echoLimit {
		t.Errorf("duration: %.300v", err)
	}
}

func longestRun(s string, c byte) int {
	longest, n := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			n++
			longest = max(longest, n)
		} else {
			n = 0
		}
	}
	return longest
}
