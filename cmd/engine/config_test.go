package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// TestRunRefusesClashingListens: listen addresses that clash across tunnels, a port out of range
// and a host name are configuration errors naming the fields, and `engine run` exits 2 before it
// binds anything (the address in use is never reached).
func TestRunRefusesClashingListens(t *testing.T) {
	addr := testutil.Listen(t).Addr().String()
	cases := map[string]struct {
		yaml, field string
		also        []string
	}{
		"clash": {`exit: {id: x}
tunnels:
  - {name: a, exit: x, socks: "` + addr + `"}
  - {name: b, exit: x, http: "` + addr + `"}
`, "tunnels[1].http", []string{"tunnels[0].socks"}},
		"port":  {"exit: {id: x}\ntunnels: [{exit: x, socks: \"127.0.0.1:70000\"}]\n", "tunnels[0].socks", []string{"70000"}},
		"host":  {"exit: {id: x}\ntunnels: [{exit: x, socks: \"localhost:1080\"}]\n", "tunnels[0].socks", []string{"not an IP address"}},
		"range": {"exit: {id: x, udp_idle_timeout: -1s}\n", "exit.udp_idle_timeout", nil},
	}
	for name, tc := range cases {
		path := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path)
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, engine.ErrInvalidConfig) {
			t.Fatalf("%s: %v, want a field error for %s", name, err, tc.field)
		}
		for _, s := range append([]string{tc.field + ":"}, tc.also...) {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", name, err, s)
			}
		}
		if code := run([]string{"--config", path}); code != exitUsage {
			t.Errorf("%s: engine run exited %d, want %d", name, code, exitUsage)
		}
		if code := check([]string{"--config", path}); code != exitUsage {
			t.Errorf("%s: engine check exited %d, want %d", name, code, exitUsage)
		}
	}
}

// TestRunPoolConfig: a pool section is read with the rest (unknown keys refused), its errors name
// their field under pool., and a pool on a shared bus without operators or any_exit is refused.
func TestRunPoolConfig(t *testing.T) {
	ok := "pool:\n  size: 3\n  socks_ports: 127.0.0.1:20000-20002\n  exits: {labels: {region: eu}}\n  rotate: {max_age: 30m, jitter: 10%}\n  tunnel: {drain_timeout: 30s}\n"
	path := filepath.Join(t.TempDir(), "ok.yaml")
	if err := os.WriteFile(path, []byte(ok), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil || cfg.Pool == nil || cfg.Pool.Size != 3 || cfg.Pool.Exits.Labels["region"] != "eu" {
		t.Fatalf("good pool config: %+v, %v", cfg.Pool, err)
	}
	for name, tc := range map[string]struct{ yaml, field string }{
		"few ports": {"pool: {size: 5, socks_ports: \"127.0.0.1:20000-20002\"}\n", "pool.socks_ports"},
		"strategy":  {"pool: {size: 1, socks_ports: \"127.0.0.1:20000\", strategy: fastest}\n", "pool.strategy"},
		"tunnel":    {"pool: {size: 1, socks_ports: \"127.0.0.1:20000\", tunnel: {exit: x}}\n", "pool.tunnel.exit"},
		"shared":    {"nats: {urls: [\"nats://127.0.0.1:4222\"]}\npool: {size: 1, socks_ports: \"127.0.0.1:20000\"}\n", "trust.operators"},
	} {
		path := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path)
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: %v, want a field error for %s", name, err, tc.field)
		}
		if code := run([]string{"--config", path}); code != exitUsage {
			t.Errorf("%s: engine run exited %d, want %d", name, code, exitUsage)
		}
	}
	// A pool of WireGuard exits only needs no trust on a shared bus; a file of its directory that
	// does not parse is refused, naming the field and the file's line.
	wgDir := t.TempDir()
	wgPool := fmt.Sprintf("nats: {urls: [\"nats://127.0.0.1:4222\"]}\npool: {size: 1, socks_ports: \"127.0.0.1:20000\", exits: {nats: false, wireguard_dir: %q}}\n", wgDir)
	path = filepath.Join(t.TempDir(), "wg.yaml")
	if err := os.WriteFile(path, []byte(wgPool), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(path); err != nil {
		t.Errorf("a pool of WireGuard exits only on a shared bus: %v", err)
	}
	if err := os.WriteFile(filepath.Join(wgDir, "bad.conf"), []byte("[Interface]\nMTU = 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig(path)
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Field != "pool.exits.wireguard_dir" || !strings.Contains(err.Error(), filepath.Join(wgDir, "bad.conf")+":2: MTU") {
		t.Errorf("a bad file in wireguard_dir: %v", err)
	}
	if code := run([]string{"--config", path}); code != exitUsage {
		t.Errorf("a bad file in wireguard_dir: engine run exited %d, want %d", code, exitUsage)
	}
	path = filepath.Join(t.TempDir(), "unknown.yaml")
	if err := os.WriteFile(path, []byte("pool: {size: 1, socks_ports: \"127.0.0.1:20000\", sise: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "sise") {
		t.Errorf("unknown pool key: %v", err)
	}
}

// TestRunRefusesBadWireGuardExits: `engine run` checks wireguard_exits before it starts anything:
// an error names the field (for a file, with file:line: key inside) and exits 2; an unknown key
// is refused; no error shows the private key.
func TestRunRefusesBadWireGuardExits(t *testing.T) {
	dir := t.TempDir()
	priv, _ := testutil.KeyPair(t)
	_, pub := testutil.KeyPair(t)
	b64 := func(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
	file := filepath.Join(dir, "wg0.conf")
	conf := "[Interface]\nPrivateKey = " + b64(priv) + "\nAddress = 10.64.0.2/32\n[Peer]\nPublicKey = " + b64(pub) +
		"\nEndpoint = vpn.example.net:51820\nAllowedIPs = 0.0.0.0/0\n"
	if err := os.WriteFile(file, []byte(strings.Replace(conf, "Address", "Adress", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	inline := func(pubKey, extra string) string {
		return fmt.Sprintf("wireguard_exits:\n  - name: one\n    interface: {private_key: %q, address: [10.64.0.2/32]}\n"+
			"    peer: {public_key: %q, endpoint: \"vpn.example.net:51820\", allowed_ips: [0.0.0.0/0]%s}\n"+
			"tunnels: [{exit: \"wg:one\", socks: \"127.0.0.1:0\"}]\n", b64(priv), pubKey, extra)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(inline(b64(pub), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := loadConfig(good); err != nil || len(cfg.WireGuardExits) != 1 {
		t.Fatalf("a good WireGuard exit: %+v, %v", cfg.WireGuardExits, err)
	}
	if code := check([]string{"--config", good}); code != exitOK {
		t.Fatalf("engine check of a good config exited %d", code)
	}
	for name, tc := range map[string]struct {
		yaml, field string
		also        []string
	}{
		"public key": {inline(b64(pub)[:43], ""), "wireguard_exits[0].peer.public_key", []string{"invalid key"}},
		"file":       {fmt.Sprintf("wireguard_exits: [{name: one, file: %q}]\n", file), "wireguard_exits[0].file", []string{file + ":3: Adress: unknown key"}},
		"no file":    {fmt.Sprintf("wireguard_exits: [{name: one, file: %q}]\n", file+".gone"), "wireguard_exits[0].file", nil},
		"tunnel":     {strings.Replace(inline(b64(pub), ""), `exit: "wg:one"`, `exit: "wg:two"`, 1), "tunnels[0].exit", []string{`"wg:two" is not among wireguard_exits`}},
		"unknown":    {inline(b64(pub), ", weight: 1"), "", []string{"weight"}},
	} {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path)
		var fe *engine.FieldError
		if err == nil || tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
			t.Errorf("%s: %v, want a field error for %q", name, err, tc.field)
			continue
		}
		for _, s := range tc.also {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", name, err, s)
			}
		}
		if strings.Contains(err.Error(), b64(priv)) {
			t.Errorf("%s: %q shows the private key", name, err)
		}
		if code := run([]string{"--config", path}); code != exitUsage {
			t.Errorf("%s: engine run exited %d, want %d", name, code, exitUsage)
		}
	}
}

// TestCheckPoolWireGuardRefs: engine check refuses a pool naming a WireGuard exit that
// wireguard_exits does not have, as engine run would when it opens the pool.
func TestCheckPoolWireGuardRefs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.yaml")
	yaml := "pool:\n  size: 1\n  socks_ports: 127.0.0.1:20000-20000\n  exits: {nats: false, wireguard: [\"wg:nope\"]}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Field != "pool.exits.wireguard[0]" || !errors.Is(err, engine.ErrUnknownExit) {
		t.Fatalf("a pool naming wg:nope: %v, want a field error for pool.exits.wireguard[0]", err)
	}
	if code := check([]string{"--config", path}); code != exitUsage {
		t.Fatalf("engine check exited %d, want %d", code, exitUsage)
	}
}
