package engine

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// decodeConfig reads YAML as cmd/engine does: unknown keys are errors.
func decodeConfig(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, err
	}
	return cfg, nil
}

// docsExample is the YAML example of docs/configuration.md.
func docsExample(tb testing.TB) []byte {
	tb.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		tb.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		tb.Fatal("docs/configuration.md has no yaml example")
	}
	return []byte(example)
}

// TestDocsExampleDecodes: the documented example uses only keys the config has, and with its
// placeholder static peer removed it is a valid configuration.
func TestDocsExampleDecodes(t *testing.T) {
	cfg, err := decodeConfig(docsExample(t))
	if err != nil {
		t.Fatalf("docs example: %v", err)
	}
	if len(cfg.Exit.Egress.Allow) != 0 || cfg.Exit.Egress.AllowReserved || len(cfg.Tunnels) != 1 {
		t.Fatalf("docs example decoded as %+v", cfg)
	}
	cfg.Exit.StaticPeers = nil // its public key is a placeholder
	if err := cfg.Validate(); err != nil {
		t.Fatalf("docs example: %v", err)
	}
}

// TestConfigSeeds: the fuzz seeds are what they say: valid.yaml passes, the others fail naming a field.
func TestConfigSeeds(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "config", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no seeds")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := decodeConfig(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		err = cfg.Validate()
		var fe *FieldError
		switch {
		case strings.HasSuffix(f, "valid.yaml") && err != nil:
			t.Errorf("%s: %v", f, err)
		case !strings.HasSuffix(f, "valid.yaml") && !errors.As(err, &fe):
			t.Errorf("%s: %v, want a field error", f, err)
		}
	}
}

// FuzzConfig: YAML bytes → decode (unknown keys refused) → Validate never panics, and every
// validation error is a FieldError with a short message.
//
//	go test ./engine -run '^$' -fuzz FuzzConfig -fuzztime 60s
func FuzzConfig(f *testing.F) {
	f.Add(docsExample(f))
	files, _ := filepath.Glob(filepath.Join("testdata", "config", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", "{}", "tunnels: [{exit: x, socks: '127.0.0.1:0'}]",
		"exit: {id: x, subnet: 10.0.0.0/8, mtu: 9000, connect_port: 65535}",
		"exit: {id: x, subnet: 'fd00::/120', static_peers: [{public_key: JqdiTCD2Vj7oFLy5iK2zdXq5kSusVRynuCcxarLLKUg=, allowed_ips: ['fd00::2']}]}",
		"nats: {urls: ['tls://u:p@[::1]:4222'], tls: {server_name: x}}\ntrust: {any_exit: true}\ntunnels: [{exit: x, http: '[::]:0', pins: {x: y}}]",
		"tunnels: [{exit: x, socks: '127.0.0.1:1', health: {interval: 5, backoff_min: 1h, backoff_max: 1s}}]",
		"exit: {id: x, requests_per_second: 1e400, request_burst: -1, max_sessions_per_client: 99999999999}",
		"wireguard_exits: [{name: a, interface: {private_key: dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=, address: [10.64.0.2/32], mtu: 1420}, " +
			"peer: {public_key: JqdiTCD2Vj7oFLy5iK2zdXq5kSusVRynuCcxarLLKUg=, endpoint: 'vpn.example.net:51820', allowed_ips: ['0.0.0.0/0']}, " +
			"check: {tcp: '10.64.0.1:80'}}]\ntunnels: [{exit: 'wg:a', exits: ['wg:b'], socks: '127.0.0.1:0'}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := decodeConfig(data)
		if err != nil {
			return
		}
		// Files the config names are read when it is checked: the fuzzer must not name this
		// host's devices or files (TestValidateConfigFiles covers what a bad file does).
		n := &cfg.NATS
		n.NKeySeedFile, n.CredentialsFile, n.TLS.CAFile, n.TLS.CertFile, n.TLS.KeyFile = "", "", "", "", ""
		for i := range cfg.Tunnels {
			cfg.Tunnels[i].Auth.UsersFile = ""
		}
		for i := range cfg.WireGuardExits {
			cfg.WireGuardExits[i].File = ""
		}
		err = cfg.Validate()
		if err == nil {
			return
		}
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("error without a field: %v", err)
		}
		if len(err.Error()) > len("config: ")+maxField+len("…: ")+maxMessage+len("…") {
			t.Fatalf("%d-byte message", len(err.Error()))
		}
	})
}
