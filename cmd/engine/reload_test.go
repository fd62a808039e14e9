package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// reloadEnv is a NATS server with two exits (ra, rb) that announce every second, and a node that
// runs the config file path as `engine run` does.
type reloadEnv struct {
	natsURL string
	dir     string
	path    string
	node    *node
	echo    string
}

func newReloadEnv(t *testing.T) *reloadEnv {
	opts := natstest.DefaultTestOptions
	opts.Host, opts.Port = "127.0.0.1", -1
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	env := &reloadEnv{natsURL: srv.ClientURL(), dir: t.TempDir(), echo: testutil.EchoServer(t).Addr()}
	env.path = filepath.Join(env.dir, "engine.yaml")
	for _, id := range []string{"ra", "rb"} {
		startExit(t, env.natsURL, id)
	}
	return env
}

// startExit starts exit id on the NATS server at url, announcing every second; closed at the
// test's end.
func startExit(t *testing.T, url, id string) {
	t.Helper()
	e, err := engine.New(engine.Config{NATS: engine.NATSConfig{URLs: []string{url}},
		Exit: &engine.ExitConfig{ID: id, Listen: "127.0.0.1:0", Open: true, AnnounceInterval: engine.Duration(time.Second),
			Egress: engine.EgressConfig{AllowLoopback: true}, RequestsPerSecond: 100, RequestBurst: 100}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatalf("exit %s: %v", id, err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
}

// write writes the node's config: the shared header, then body.
func (env *reloadEnv) write(t *testing.T, body string) {
	t.Helper()
	head := fmt.Sprintf("nats: {urls: [%q]}\ntrust: {any_exit: true}\n", env.natsURL)
	if err := os.WriteFile(env.path, []byte(head+body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the node on the config file as `engine run` would (without signals and the admin API).
func (env *reloadEnv) start(t *testing.T) {
	t.Helper()
	rc, err := loadConfig(env.path)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	logger, level := newLogger(rc.LogFormat, rc.LogLevel, io.Discard)
	cfg := rc.Config
	cfg.Logger = logger
	eng, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{path: env.path, eng: eng, logger: logger, level: level, cur: rc, changed: make(chan struct{}, 1),
		reloaded: make(chan struct{}, 1)}
	names := n.configuredNames()
	n.configured.Store(&names)
	go n.logEvents()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	env.node = n
}

func (env *reloadEnv) reload(t *testing.T) (reloadResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return env.node.reload(ctx)
}

// tunnelUp waits until the engine's tunnel name is Up on exit and carries an echo through socks.
func (env *reloadEnv) tunnelUp(t *testing.T, name, exit string) engine.TunnelInfo {
	t.Helper()
	var tun *engine.Tunnel
	info := testutil.Poll(t, 30*time.Second, name+" up on "+exit, func(ctx context.Context) (engine.TunnelInfo, error) {
		var err error
		if tun, err = env.node.eng.Tunnel(ctx, name); err != nil {
			return engine.TunnelInfo{}, err
		}
		return tun.Info(ctx)
	}, func(i engine.TunnelInfo) bool { return i.State == messages.StateUp && i.ExitID == exit })
	if err := echoVia(info.SOCKSAddr, env.echo); err != nil {
		t.Fatalf("%s: echo through %s: %v", name, info.SOCKSAddr, err)
	}
	return info
}

// dialVia opens a connection to target through the SOCKS5 proxy at socks and proves it relays.
func dialVia(socks, target string) (net.Conn, error) {
	d, err := proxy.SOCKS5("tcp", socks, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func echoVia(socks, target string) error {
	return testutil.SOCKS5Echo(socks, target, []byte("reload echo"))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestReloadAppliesEachKindOfChange: one reload that switches a tunnel whose exit changed, closes
// a removed one, opens a new one, replaces one whose proxies changed, leaves one alone, grows the
// pool, changes the log level, and reports a NATS change as needing a restart; each outcome is
// checked through the engine and through the proxies. An invalid file then changes nothing.
func TestReloadAppliesEachKindOfChange(t *testing.T) {
	env := newReloadEnv(t)
	sa, sb, sd, se, sc, hd, sf := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	ports := testutil.FreePortRange(t, 3)
	tunnel := func(name, exit, socks string, extra string) string {
		return fmt.Sprintf("  - {name: %s, exit: %s, socks: %q, udp_bind: 127.0.0.1%s}\n", name, exit, socks, extra)
	}
	poolYAML := func(size int) string {
		return fmt.Sprintf("pool: {name: rp, size: %d, socks_ports: %q, exits: {ids: [ra, rb]}, tunnel: {udp_bind: 127.0.0.1}}\n", size, ports)
	}
	env.write(t, "log_level: info\ntunnels:\n"+tunnel("a", "ra", sa, "")+tunnel("b", "ra", sb, "")+
		tunnel("d", "ra", sd, "")+tunnel("e", "rb", se, "")+tunnel("f", "ra", sf, "")+poolYAML(2))
	env.start(t)
	for _, n := range []string{"a", "b", "d"} {
		env.tunnelUp(t, n, "ra")
	}
	eInfo := env.tunnelUp(t, "e", "rb")
	fInfo := env.tunnelUp(t, "f", "ra")

	env.write(t, "log_level: debug\nlog_format: json\ntunnels:\n"+tunnel("a", "rb", sa, "")+tunnel("c", "rb", sc, "")+
		tunnel("d", "ra", sd, fmt.Sprintf(", http: %q", hd))+tunnel("e", "rb", se, "")+
		tunnel("f", "ra", sf, ", max_connections: 1, drain_timeout: 2s")+poolYAML(3))
	res, err := env.reload(t)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	want := reloadResult{Opened: []string{"c"}, Closed: []string{"b"}, Switched: []string{"a"}, Updated: []string{"f"}, Replaced: []string{"d"},
		Pool: []string{"pool.size"}, Unchanged: 1, NeedsRestart: []string{"log_format"}, LogLevel: "DEBUG"}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("reload:\n got %+v\nwant %+v", res, want)
	}
	env.tunnelUp(t, "a", "rb")
	env.tunnelUp(t, "c", "rb")
	if d := env.tunnelUp(t, "d", "ra"); d.HTTPAddr != hd {
		t.Errorf("d's HTTP proxy on %q, want %s", d.HTTPAddr, hd)
	}
	if e := env.tunnelUp(t, "e", "rb"); e.SessionID != eInfo.SessionID {
		t.Errorf("the unchanged tunnel e was touched: session %s, was %s", e.SessionID, eInfo.SessionID)
	}
	// f took max_connections: 1 in place: same session, and a second connection is refused while
	// one is open.
	if f := env.tunnelUp(t, "f", "ra"); f.SessionID != fInfo.SessionID {
		t.Errorf("f was updated in place but its session changed: %s, was %s", f.SessionID, fInfo.SessionID)
	}
	testutil.Poll(t, 10*time.Second, "f's earlier connections to end", func(ctx context.Context) (messages.ConnectionStats, error) {
		tun, err := env.node.eng.Tunnel(ctx, "f")
		if err != nil {
			return messages.ConnectionStats{}, err
		}
		return tun.Stats(ctx)
	}, func(s messages.ConnectionStats) bool { return s.Active == 0 })
	held, err := dialVia(sf, env.echo)
	if err != nil {
		t.Fatalf("a connection through f: %v", err)
	}
	if err := echoVia(sf, env.echo); err == nil {
		t.Error("f took a second connection with max_connections: 1")
	}
	held.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := env.node.eng.Tunnel(ctx, "b"); !errors.Is(err, engine.ErrTunnelNotFound) {
		t.Errorf("b after the reload: %v, want ErrTunnelNotFound", err)
	}
	if c, err := net.DialTimeout("tcp", sb, time.Second); err == nil {
		c.Close()
		t.Errorf("b's port %s still accepts", sb)
	}
	slots, err := env.node.pool.Load().Slots(ctx)
	if err != nil || len(slots) != 3 {
		t.Fatalf("pool after the reload: %d slots, %v; want 3", len(slots), err)
	}
	if !env.node.logger.Enabled(ctx, -4) {
		t.Error("log level is not debug after the reload")
	}

	// The same file again: nothing to do but what still needs a restart.
	res, err = env.reload(t)
	if err != nil || res.Unchanged != 5 || len(res.Opened)+len(res.Closed)+len(res.Switched)+len(res.Updated)+len(res.Replaced)+len(res.Pool) != 0 ||
		!slices.Equal(res.NeedsRestart, []string{"log_format"}) {
		t.Errorf("reload of the same file: %+v, %v", res, err)
	}

	// a, switched by the last reload, takes a new limit in place: not replaced, same session.
	aInfo := env.tunnelUp(t, "a", "rb")
	env.write(t, "log_level: debug\nlog_format: json\ntunnels:\n"+tunnel("a", "rb", sa, ", max_connections: 9")+tunnel("c", "rb", sc, "")+
		tunnel("d", "ra", sd, fmt.Sprintf(", http: %q", hd))+tunnel("e", "rb", se, "")+
		tunnel("f", "ra", sf, ", max_connections: 1, drain_timeout: 2s")+poolYAML(3))
	if res, err := env.reload(t); err != nil || !slices.Equal(res.Updated, []string{"a"}) || len(res.Replaced)+len(res.Switched) != 0 {
		t.Fatalf("a new limit for a switched tunnel: %+v, %v; want a updated in place", res, err)
	}
	if a := env.tunnelUp(t, "a", "rb"); a.SessionID != aInfo.SessionID {
		t.Errorf("a was updated in place but its session changed")
	}

	// An invalid file changes nothing and names its field.
	env.write(t, "tunnels:\n"+tunnel("a", "bad id!", sa, ""))
	if _, err := env.reload(t); err == nil {
		t.Fatal("reload of an invalid file succeeded")
	} else if fe := new(engine.FieldError); !errors.As(err, &fe) || fe.Field != "tunnels[0].exit" {
		t.Fatalf("reload of an invalid file: %v, want a field error for tunnels[0].exit", err)
	}
	tuns, err := env.node.eng.Tunnels(ctx)
	if err != nil || len(tuns) != 5 {
		t.Fatalf("tunnels after the invalid reload: %d, %v; want 5", len(tuns), err)
	}
	env.tunnelUp(t, "a", "rb")
}

// TestReloadPool: a reload changes a pool's settings in place, replaces it when a fixed setting
// (its ports) changed, closes it when it is gone from the file, and opens it when it comes back.
func TestReloadPool(t *testing.T) {
	env := newReloadEnv(t)
	four, err := pool.ParsePortRange(testutil.FreePortRange(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	r1 := fmt.Sprintf("127.0.0.1:%d-%d", four.First, four.First+1)
	r2 := fmt.Sprintf("127.0.0.1:%d-%d", four.First+2, four.First+3)
	// A tunnel stays throughout: a file with nothing to run is refused.
	keep := fmt.Sprintf("tunnels: [{name: x, exit: ra, socks: %q, udp_bind: 127.0.0.1}]\n", freeAddr(t))
	poolYAML := func(ports, extra string) string {
		return keep + fmt.Sprintf("pool: {name: rp, size: 2, socks_ports: %q, exits: {ids: [ra, rb]}, tunnel: {udp_bind: 127.0.0.1, drain_timeout: 1s}%s}\n", ports, extra)
	}
	env.write(t, poolYAML(r1, ""))
	env.start(t)
	slotsUp := func(ports string) {
		t.Helper()
		pr, err := pool.ParsePortRange(ports)
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, "2 slots up on "+ports, func() bool {
			p := env.node.pool.Load()
			if p == nil || p.SOCKSPorts() != pr {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			slots, err := p.Slots(ctx)
			return err == nil && len(slots) == 2 && slots[0].State == messages.SlotUp && slots[1].State == messages.SlotUp
		})
		for i := range 2 {
			if err := echoVia(pr.AddrOf(i), env.echo); err != nil {
				t.Fatalf("slot %d on %s: %v", i, pr.AddrOf(i), err)
			}
		}
	}
	refuses := func(ports string) {
		t.Helper()
		pr, _ := pool.ParsePortRange(ports)
		for i := range 2 {
			if c, err := net.DialTimeout("tcp", pr.AddrOf(i), time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts", pr.AddrOf(i))
			}
		}
	}
	slotsUp(r1)
	for _, step := range []struct {
		file string
		want []string
	}{
		{poolYAML(r1, ", strategy: random, rotate: {max_age: 1h}"), []string{"pool.rotate", "pool.strategy"}},
		{poolYAML(r2, ", strategy: random, rotate: {max_age: 1h}"), []string{"replaced"}},
		{keep, []string{"closed"}},
		{poolYAML(r1, ""), []string{"opened"}},
	} {
		env.write(t, step.file)
		res, err := env.reload(t)
		if err != nil || !slices.Equal(res.Pool, step.want) || len(res.Errors) != 0 {
			t.Fatalf("reload to %q: pool %v (%+v), %v; want %v", step.file, res.Pool, res, err, step.want)
		}
		switch step.want[0] {
		case "replaced":
			refuses(r1)
			slotsUp(r2)
		case "closed":
			refuses(r2)
			if env.node.pool.Load() != nil {
				t.Fatal("a pool runs after it left the file")
			}
		case "opened":
			slotsUp(r1)
		}
	}
}

// waitingTunnel starts the node with tunnel a on the exit rx, which does not exist, and waits until
// a keeps trying (Reconnecting). The returned function writes a's line with another exit and extra
// settings.
func waitingTunnel(t *testing.T, env *reloadEnv) func(exit, extra string) {
	sa := freeAddr(t)
	write := func(exit, extra string) {
		env.write(t, fmt.Sprintf("tunnels: [{name: a, exit: %s, socks: %q, udp_bind: 127.0.0.1, handshake_timeout: 1s, "+
			"health: {backoff_min: 100ms, backoff_max: 300ms}%s}]\n", exit, sa, extra))
	}
	write("rx", "")
	env.start(t)
	testutil.Poll(t, 10*time.Second, "a reconnecting", func(ctx context.Context) (engine.TunnelInfo, error) {
		tun, err := env.node.eng.Tunnel(ctx, "a")
		if err != nil {
			return engine.TunnelInfo{}, err
		}
		return tun.Info(ctx)
	}, func(i engine.TunnelInfo) bool { return i.State == messages.StateReconnecting })
	return write
}

// TestReloadGivesAWaitingTunnelAFailoverExit: a tunnel that keeps trying an exit that does not
// exist takes a failover list in place, and its reconnection goes on over it: Up on the new exit.
func TestReloadGivesAWaitingTunnelAFailoverExit(t *testing.T) {
	env := newReloadEnv(t)
	waitingTunnel(t, env)("rx", ", exits: [ra]")
	res, err := env.reload(t)
	if err != nil || !slices.Equal(res.Updated, []string{"a"}) || len(res.Replaced)+len(res.Errors) != 0 {
		t.Fatalf("reload adding a failover exit: %+v, %v; want a updated in place", res, err)
	}
	env.tunnelUp(t, "a", "ra")
}

// TestReloadFixesAMistypedExit: a tunnel that keeps trying an exit that does not exist cannot
// switch (it is not up); a reload that corrects its exit replaces it, and it comes up there.
func TestReloadFixesAMistypedExit(t *testing.T) {
	env := newReloadEnv(t)
	waitingTunnel(t, env)("ra", "")
	res, err := env.reload(t)
	if err != nil || !slices.Equal(res.Replaced, []string{"a"}) || len(res.Switched)+len(res.Errors) != 0 {
		t.Fatalf("reload correcting the exit: %+v, %v; want a replaced", res, err)
	}
	env.tunnelUp(t, "a", "ra")
}
