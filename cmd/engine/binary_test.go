package main

// The built binary, driven as an operator would: `engine run` with a config file, the CLI against
// its admin API, SIGHUP to reload, SIGTERM to stop.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/testutil"
)

var (
	binOnce sync.Once
	binDir  string // removed by TestMain
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds cmd/engine once per test run (without -race: it is the program under test, not
// the test).
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "warren-engine-bin")
		if err != nil {
			binErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "engine")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a running `engine run`: its stdout lines arrive on lines.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *testutil.SyncBuffer
	done   chan error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 64), stderr: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("engine stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// line waits for a stdout line that starts with prefix.
func (p *proc) line(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	return testutil.AwaitMatch(t, p.lines, within, "a line starting with "+prefix, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// stop sends sig and returns the exit code.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	testutil.AwaitClosed(t, p.lines, 30*time.Second, "engine's stdout to close") // drains what is left
	err := testutil.Await(t, p.done, 10*time.Second, "engine to exit")
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// cliRun runs a CLI command against addr; it returns stdout, stderr and the exit code.
func cliRun(t *testing.T, addr string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), append(args, "--admin", addr)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func cliJSON[T any](t *testing.T, addr string, args ...string) T {
	t.Helper()
	out, errs, code := cliRun(t, addr, append(args, "--json")...)
	var v T
	if code != 0 {
		t.Fatalf("engine %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("engine %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// TestBinaryReloadAndCLI: `engine run` comes up and prints ready; the CLI lists, switches and
// closes its tunnels; SIGHUP after an edit of the file opens the new tunnel without a restart;
// mistakes get the API's error and exit 1; SIGTERM exits 0.
func TestBinaryReloadAndCLI(t *testing.T) {
	env := newReloadEnv(t)
	adminAddr, sa, sb := freeAddr(t), freeAddr(t), freeAddr(t)
	base := fmt.Sprintf("admin: {listen: %q}\ntunnels:\n  - {name: a, exit: ra, socks: %q, udp_bind: 127.0.0.1}\n", adminAddr, sa)
	env.write(t, base)
	p := startProc(t, "run", "--config", env.path)
	if l := p.line(t, "ready", 60*time.Second); !strings.Contains(l, "socks5="+sa) {
		t.Fatalf("ready line %q does not name %s", l, sa)
	}
	ts := cliJSON[[]admin.Tunnel](t, adminAddr, "tunnels")
	if len(ts) != 1 || ts[0].Name != "a" || ts[0].State != "up" || ts[0].Exit != "ra" || ts[0].SOCKS != sa {
		t.Fatalf("tunnels: %+v", ts)
	}
	if out, _, code := cliRun(t, adminAddr, "tunnels"); code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, sa) {
		t.Fatalf("tunnels table (exit %d):\n%s", code, out)
	}

	// SIGHUP: tunnel b appears.
	env.write(t, base+fmt.Sprintf("  - {name: b, exit: rb, socks: %q, udp_bind: 127.0.0.1}\n", sb))
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 30*time.Second, "tunnel b up after SIGHUP", func() bool {
		out, _, code := cliRun(t, adminAddr, "tunnel", "b", "--json")
		var tb admin.Tunnel
		return code == 0 && json.Unmarshal([]byte(out), &tb) == nil && tb.State == "up" && tb.Exit == "rb"
	})
	if err := echoVia(sb, env.echo); err != nil {
		t.Fatalf("echo through b: %v", err)
	}

	sw := cliJSON[admin.Tunnel](t, adminAddr, "switch", "a", "rb")
	if sw.Exit != "rb" || sw.State != "up" {
		t.Fatalf("switch a rb: %+v", sw)
	}
	if err := echoVia(sa, env.echo); err != nil {
		t.Fatalf("echo through a after the switch: %v", err)
	}
	if _, _, code := cliRun(t, adminAddr, "close", "b", "--drain", "0s"); code != 0 {
		t.Fatalf("close b: exit %d", code)
	}
	if _, errs, code := cliRun(t, adminAddr, "close", "nosuch"); code != 1 || !strings.Contains(errs, "not_found") {
		t.Fatalf("close nosuch: exit %d, %q; want 1 and not_found", code, errs)
	}
	if _, errs, code := cliRun(t, adminAddr, "switch", "a"); code != 2 {
		t.Fatalf("switch with one argument: exit %d (%s), want 2", code, errs)
	}
	type status struct {
		admin.Status
		Ready admin.Health `json:"ready"`
	}
	// b is in the file but closed: not ready until a reload opens it again.
	st := cliJSON[status](t, adminAddr, "status")
	if st.Tunnels.Total != 1 || st.Tunnels.ByState["up"] != 1 || !st.NATS.Connected || st.Role != "client" ||
		st.Ready.OK || strings.Join(st.Ready.Problems, ";") != "tunnel b: not open" {
		t.Fatalf("status: %+v", st)
	}
	// a stays where the CLI switched it: the file did not change it.
	if r := cliJSON[admin.ReloadResult](t, adminAddr, "reload"); strings.Join(r.Opened, ",") != "b" || r.Unchanged != 1 ||
		len(r.NeedsRestart) != 0 || len(r.Switched) != 0 {
		t.Fatalf("reload after closing b: %+v", r)
	}
	testutil.Eventually(t, 30*time.Second, "ready after the reload", func() bool {
		st := cliJSON[status](t, adminAddr, "status")
		return st.Ready.OK && st.Tunnels.ByState["up"] == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	metrics, err := admin.NewClient(adminAddr, "").Metrics(ctx)
	if err != nil || !strings.Contains(string(metrics), `warren_tunnels{state="up"} 2`) {
		t.Fatalf("metrics (%v) do not count two tunnels up:\n%.2000s", err, metrics)
	}
	if code := p.stop(t, syscall.SIGTERM); code != exitOK {
		t.Fatalf("SIGTERM: exit %d, want 0", code)
	}
}

// TestBinaryWaitsForNATSAndExit: `engine run` with its NATS server and exit not up yet stays up,
// and /readyz says what is missing; once they come, the tunnel comes up by itself and the ready
// line is printed.
func TestBinaryWaitsForNATSAndExit(t *testing.T) {
	port := testutil.ClosedAddr(t).Port()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	adminAddr, sa := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "engine.yaml")
	cfg := fmt.Sprintf("nats: {urls: [%q]}\ntrust: {any_exit: true}\nadmin: {listen: %q}\ntunnels:\n"+
		"  - {name: a, exit: ra, socks: %q, udp_bind: 127.0.0.1, health: {backoff_min: 100ms, backoff_max: 500ms}}\n", natsURL, adminAddr, sa)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "run", "--config", path)
	c := admin.NewClient(adminAddr, "")
	defer c.CloseIdleConnections()
	h := testutil.Poll(t, 30*time.Second, "readyz to answer", func(ctx context.Context) (admin.Health, error) { return c.Readyz(ctx) },
		func(admin.Health) bool { return true })
	if h.OK || !strings.Contains(strings.Join(h.Problems, "\n"), "tunnel a") {
		t.Fatalf("readyz before NATS is up: %+v", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := c.Status(ctx); err != nil || st.NATS.Connected {
		t.Fatalf("status before NATS is up: %+v, %v", st.NATS, err)
	}

	opts := natstest.DefaultTestOptions
	opts.Host, opts.Port = "127.0.0.1", int(port)
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	env := &reloadEnv{natsURL: natsURL}
	startExit(t, env.natsURL, "ra")
	p.line(t, "ready", 60*time.Second)
	if h, err := c.Readyz(ctx); err != nil || !h.OK {
		t.Fatalf("readyz once up: %+v, %v", h, err)
	}
	if code := p.stop(t, syscall.SIGINT); code != exitOK {
		t.Fatalf("SIGINT: exit %d, want 0", code)
	}
}
