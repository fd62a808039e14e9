package engine

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateNamesTheField(t *testing.T) {
	good := func() Config {
		return Config{
			Exit:    &ExitConfig{ID: "x"},
			Tunnels: []TunnelSpec{{Exit: "x", SOCKS: "127.0.0.1:0"}},
		}
	}
	if err := (&Config{Exit: &ExitConfig{ID: "x"}}).Validate(); err != nil {
		t.Fatalf("minimal exit config: %v", err)
	}
	c := good()
	if err := c.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"identity", func(c *Config) { c.Identity = "nope" }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"nats.embedded_host", func(c *Config) { c.NATS.EmbeddedHost = "not-an-ip" }},
		{"exit.id", func(c *Config) { c.Exit.ID = "has space" }},
		{"exit.private_key", func(c *Config) { c.Exit.PrivateKey = "short" }},
		{"exit.listen", func(c *Config) { c.Exit.Listen = "127.0.0.1" }},
		{"exit.endpoint", func(c *Config) { c.Exit.Listen = "0.0.0.0:51820" }},
		{"exit.subnet", func(c *Config) { c.Exit.Subnet = "10.0.0.0/33" }},
		{"exit.subnet", func(c *Config) { c.Exit.Subnet = "10.0.0.1/32" }},
		{"exit.mtu", func(c *Config) { c.Exit.MTU = 100 }},
		{"exit.egress.allow[0]", func(c *Config) { c.Exit.Egress.Allow = []string{"bogus"} }},
		{"exit.egress.deny[0]", func(c *Config) { c.Exit.Egress.Deny = []string{"1.2.3.4"} }},
		{"exit.private_key", func(c *Config) { c.Exit.StaticPeers = []StaticPeer{{PublicKey: "x"}} }},
		{"exit.static_peers[0].allowed_ips[0]", func(c *Config) {
			c.Exit.PrivateKey = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
			c.Exit.StaticPeers = []StaticPeer{{PublicKey: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", AllowedIPs: []string{"10.0.0.0/8"}}}
		}},
		{"exit.allowed_clients[0]", func(c *Config) { c.Exit.AllowedClients = []string{"a.b"} }},
		{"tunnels[0].exit", func(c *Config) { c.Tunnels[0].Exit = "" }},
		{"tunnels[0].socks", func(c *Config) { c.Tunnels[0].SOCKS = "" }},
		{"tunnels[0].socks", func(c *Config) { c.Tunnels[0].SOCKS = "1080" }},
		{"tunnels[0].udp_bind", func(c *Config) { c.Tunnels[0].UDPBind = "0.0.0.0" }},
		{"tunnels[0].keepalive", func(c *Config) { c.Tunnels[0].Keepalive = 70000 }},
		{"tunnels[1].name", func(c *Config) {
			c.Tunnels = append(c.Tunnels, c.Tunnels[0])
			c.Tunnels[0].Name, c.Tunnels[1].Name = "a", "a"
		}},
	}
	for _, tc := range cases {
		c := good()
		tc.mutate(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: got %v, want a FieldError for %s", tc.field, err, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: message %q does not name the field", tc.field, err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{Tunnels: []TunnelSpec{{Exit: "x"}}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New accepted a tunnel without proxies: %v", err)
	}
}
