package admin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warren-tunnel/warren/engine"
)

// TestTunnelSpecJSON: a spec goes through its JSON form unchanged, and that form has the config
// file's field names (the same document read as YAML gives the same spec).
func TestTunnelSpecJSON(t *testing.T) {
	spec := engine.TunnelSpec{Name: "t", Exit: "x", SOCKS: "127.0.0.1:1080", HTTP: "127.0.0.1:8080", UDPBind: "127.0.0.1",
		HandshakeTimeout: engine.Duration(3 * time.Second), Keepalive: -1, MaxConnectionsPerSource: 7,
		Connections: engine.ConnLimits{IdleTimeout: engine.Duration(time.Minute), IdleExempt: []string{"*:22", "10.0.0.0/8:*"}},
		Exits:       []string{"y", "z"}, Pins: map[string]string{"x": "abc"},
		Auth:      engine.ProxyAuth{Users: []engine.ProxyUser{{User: "u", Password: "p"}}, AllowUnauthenticated: true},
		Handshake: engine.HandshakeLimits{Timeout: engine.Duration(time.Second), MaxPending: 9},
		Health:    engine.HealthConfig{Failures: 5, BackoffMax: engine.Duration(time.Minute)}}
	data, err := encodeTunnelSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeTunnelSpec(data)
	if err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	if !reflect.DeepEqual(got, spec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, spec)
	}
	var fromYAML engine.TunnelSpec
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&fromYAML); err != nil {
		t.Fatalf("the JSON form read as YAML: %v", err)
	}
	if !reflect.DeepEqual(fromYAML, spec) {
		t.Fatalf("as YAML:\n got %+v\nwant %+v", fromYAML, spec)
	}
	var keys map[string]any
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "udp_bind", "handshake_timeout", "max_connections_per_source", "health", "auth"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("no %q in %s", k, data)
		}
	}
	if strings.Contains(string(data), "Check") {
		t.Errorf("the auth check function in %s", data)
	}
}
