package main

import (
	"errors"
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
	}
}
