package test

// Warren as operators run it (issue 17's own measurement): an exit and a client, each an
// `engine run` process of the built binary, the exit with an embedded NATS server; the benchmark
// process is the SOCKS5 user and the sink or echo server behind the exit.
//
//	go test ./test -run '^$' -bench BenchmarkProcesses -benchtime 10x
//
// upload/streams=N: 32 MiB per op over N streams through the client's SOCKS5 proxy to a sink on
// 127.0.0.1. Besides MB/s: client-cpu-ms/MB and exit-cpu-ms/MB, each process's CPU time (user and
// system, from /proc/PID/stat, in clock ticks of 10 ms: run enough ops) per MB uploaded; here
// cpu-ms/MB is the benchmark process's own: its SOCKS5 clients and the sink.
// connect/back-to-back and connect/idle: BenchmarkConnectLatency's measurement between processes,
// which needs more ops than the uploads:
//
//	go test ./test -run '^$' -bench 'BenchmarkProcesses/connect' -benchtime 2000x

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
)

func BenchmarkProcesses(b *testing.B) {
	bin := buildEngine(b)
	natsPort := testutil.ClosedAddr(b).Port() // the client's config names it before the exit starts
	dir := b.TempDir()
	exitCfg := fmt.Sprintf(`nats:
  embedded_listen: 127.0.0.1:%d
admin:
  listen: "off"
exit:
  id: proc-exit
  listen: 127.0.0.1:0
  open: true
  egress:
    allow_loopback: true
`, natsPort)
	clientCfg := fmt.Sprintf(`nats:
  urls: [nats://127.0.0.1:%d]
admin:
  listen: "off"
trust:
  any_exit: true
tunnels:
  - name: main
    exit: proc-exit
    socks: 127.0.0.1:0
`, natsPort)
	exit := startEngineProcess(b, bin, filepath.Join(dir, "exit.yaml"), exitCfg)
	client := startEngineProcess(b, bin, filepath.Join(dir, "client.yaml"), clientCfg)
	socks := strings.TrimPrefix(fieldOf(client.ready, "socks5="), "socks5=")
	if socks == "" {
		b.Fatalf("client's ready line %q names no SOCKS5 proxy", client.ready)
	}
	for _, streams := range []int{1, 16} {
		b.Run(fmt.Sprintf("upload/streams=%d", streams), func(b *testing.B) {
			sink := testutil.SinkServer(b)
			c0, x0 := procCPU(b, client.pid), procCPU(b, exit.pid)
			runChain(b, streams, false, func() (net.Conn, error) {
				d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
				if err != nil {
					return nil, err
				}
				return d.Dial("tcp", sink.Addr())
			})
			mb := float64(b.N) * chainBytes / 1e6
			b.ReportMetric(float64((procCPU(b, client.pid)-c0).Milliseconds())/mb, "client-cpu-ms/MB")
			b.ReportMetric(float64((procCPU(b, exit.pid)-x0).Milliseconds())/mb, "exit-cpu-ms/MB")
		})
	}
	for _, m := range latencyModes {
		b.Run("connect/"+m.name, func(b *testing.B) {
			echo := testutil.EchoServer(b)
			runLatency(b, socks, echo.Addr(), m.idle)
		})
	}
}

// buildEngine builds cmd/engine (without -race: it is the program measured) into a temporary
// directory removed at the benchmark's end.
func buildEngine(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "engine")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/warren-tunnel/warren/cmd/engine").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type engineProcess struct {
	pid   int
	ready string // the ready line
}

// startEngineProcess writes cfg to path and runs `engine run` with it until it prints its ready
// line (within 30 s); at cleanup it sends SIGTERM and waits, then kills after 10 s.
func startEngineProcess(b *testing.B, bin, path, cfg string) engineProcess {
	b.Helper()
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path, "--log-level", "warn")
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 16)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l := <-lines:
			if l == "ready" || strings.HasPrefix(l, "ready ") {
				return engineProcess{pid: cmd.Process.Pid, ready: l}
			}
		case <-done:
			b.Fatalf("%s exited before it was ready:\n%s", path, stderr.String())
		case <-deadline:
			b.Fatalf("%s: no ready line in 30 s:\n%s", path, stderr.String())
		}
	}
}

// fieldOf is the space-separated field of line that starts with prefix.
func fieldOf(line, prefix string) string {
	for _, f := range strings.Fields(line) {
		if strings.HasPrefix(f, prefix) {
			return f
		}
	}
	return ""
}

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is a process's user and system CPU time so far.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) "; state is f[0]
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * clockTick
}
