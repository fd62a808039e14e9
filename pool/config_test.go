package pool

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

func TestConfigFieldErrors(t *testing.T) {
	good := func() Config {
		return Config{Size: 10, SOCKSPorts: "127.0.0.1:20000-20009", HTTPPorts: "127.0.0.1:21000-21019",
			Rotate: Rotation{MaxAge: engine.Duration(30 * time.Minute), Jitter: "10%"}}
	}
	if c := good(); c.Validate() != nil {
		t.Fatalf("good config: %v", c.Validate())
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"pool.size", func(c *Config) { c.Size = -1 }},
		{"pool.socks_ports", func(c *Config) { c.SOCKSPorts, c.HTTPPorts = "", "" }},
		{"pool.socks_ports", func(c *Config) { c.SOCKSPorts = "127.0.0.1:20000-20004" }},
		{"pool.socks_ports", func(c *Config) { c.SOCKSPorts = "0.0.0.0:20000-20009" }},
		{"pool.socks_ports", func(c *Config) { c.SOCKSPorts = "127.0.0.1:20009-20000" }},
		{"pool.socks_ports", func(c *Config) { c.SOCKSPorts = "localhost:20000-20009" }},
		{"pool.http_ports", func(c *Config) { c.HTTPPorts = "127.0.0.1:20005-20020" }},
		{"pool.strategy", func(c *Config) { c.Strategy = "roundrobin" }},
		{"pool.max_per_exit", func(c *Config) { c.MaxPerExit = -2 }},
		{"pool.max_moves", func(c *Config) { c.MaxMoves = 5000 }},
		{"pool.exits.labels", func(c *Config) { c.Exits.Labels = map[string]string{"Region": "eu"} }},
		{"pool.exits.ids[1]", func(c *Config) { c.Exits.IDs = []string{"ok", "not ok"} }},
		{"pool.rotate.max_age", func(c *Config) { c.Rotate.MaxAge = engine.Duration(time.Millisecond) }},
		{"pool.rotate.jitter", func(c *Config) { c.Rotate.Jitter = "0.1" }},
		{"pool.rotate.jitter", func(c *Config) { c.Rotate.Jitter = "80%" }},
		{"pool.tunnel.exit", func(c *Config) { c.Tunnel.Exit = "x" }},
		{"pool.tunnel.socks", func(c *Config) { c.Tunnel.SOCKS = "127.0.0.1:1080" }},
		{"pool.tunnel.exits", func(c *Config) { c.Tunnel.Exits = []string{"x"} }},
		{"pool.tunnel.drain_timeout", func(c *Config) { c.Tunnel.DrainTimeout = engine.Duration(-time.Second) }},
		{"pool.name", func(c *Config) { c.Name = "a b" }},
	} {
		c := good()
		tc.mutate(&c)
		err := c.Validate()
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, engine.ErrInvalidConfig) {
			t.Errorf("%s: %v, want a FieldError naming it", tc.field, err)
		}
	}
}

func TestPortRange(t *testing.T) {
	r, err := ParsePortRange("127.0.0.1:20000-20099")
	if err != nil || r.Count != 100 || r.AddrOf(5) != "127.0.0.1:20005" || r.String() != "127.0.0.1:20000-20099" {
		t.Fatalf("range: %+v %v", r, err)
	}
	r, err = ParsePortRange("[::1]:30000")
	if err != nil || r.Count != 1 || r.AddrOf(0) != "[::1]:30000" {
		t.Fatalf("one IPv6 port: %+v %v", r, err)
	}
	if _, err := ParsePortRange("127.0.0.1:0-10"); err == nil || !strings.Contains(err.Error(), "first") {
		t.Errorf("port 0: %v", err)
	}
}
