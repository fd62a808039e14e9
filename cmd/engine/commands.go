package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
	"github.com/warren-tunnel/warren/signaling"
)

// shutdownGrace bounds the graceful part of a shutdown after the first signal.
const shutdownGrace = 30 * time.Second

func demo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	socks := fs.String("socks", "127.0.0.1:1080", "SOCKS5 proxy listen address")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP proxy listen address")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg := engine.Config{
		LogLevel: *level,
		Exit: &engine.ExitConfig{
			ID:     "demo-exit",
			Listen: "127.0.0.1:0",
			// Everything runs on the user's own machine, so the exit may reach loopback services.
			Egress: engine.EgressConfig{AllowLoopback: true},
		},
		Tunnels: []engine.TunnelSpec{{Name: "demo", Exit: "demo-exit", SOCKS: *socks, HTTP: *httpAddr, UDPBind: "127.0.0.1"}},
	}
	return serve(runConfig{Config: cfg})
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "engine run: --config FILE is required")
		return exitUsage
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine run: %v\n", err)
		return exitUsage
	}
	return serve(cfg)
}

// runConfig is the file `engine run` reads: the engine's configuration and, optionally, a pool.
type runConfig struct {
	engine.Config `yaml:",inline"`
	Pool          *pool.Config `yaml:"pool"`
}

func (c *runConfig) validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.Pool != nil {
		if err := c.Pool.Validate(); err != nil {
			return err
		}
		if c.NATS.Shared() && !c.Trust.AnyExit && len(c.Trust.Operators) == 0 {
			return engine.ErrNoTrustedExits
		}
	}
	return nil
}

func loadConfig(path string) (runConfig, error) {
	var cfg runConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Exit == nil && len(cfg.Tunnels) == 0 && cfg.Pool == nil {
		return cfg, fmt.Errorf("%s: config: exit: nothing to run: configure an exit, tunnels, a pool, or some of them", path)
	}
	return cfg, nil
}

// serve starts the engine and its tunnels, prints the ready line, and shuts down on a signal: the
// first SIGINT or SIGTERM gracefully, a second at once.
func serve(rc runConfig) int {
	cfg := rc.Config
	if err := rc.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "engine: %v\n", err)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: parseLevel(cfg.LogLevel)}))
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	eng, err := engine.New(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine: %v\n", err)
		return exitUsage
	}
	go func() { // drain events into the log so the engine never drops them silently
		for ev := range eng.Events() {
			cfg.Logger.Debug("event", "kind", ev.Kind, "tunnel", ev.Tunnel, "from", ev.From, "to", ev.To, "cause", ev.Cause, "session", ev.Session)
		}
	}()
	startCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startErr := make(chan error, 1)
	go func() { startErr <- start(startCtx, eng, rc) }()
	select {
	case err := <-startErr:
		if err != nil {
			fmt.Fprintf(os.Stderr, "engine: %v\n", err)
			_ = eng.Close(context.Background())
			return exitFailure
		}
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "engine: %v during start; shutting down (again to force)\n", sig)
		cancel()
		select {
		case <-startErr:
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "engine: %v again: forcing exit\n", sig)
			return exitForced
		}
		return shutdown(eng, sigs, graceFor(rc))
	}
	sig := <-sigs
	fmt.Fprintf(os.Stderr, "engine: %v: shutting down gracefully (again to force)\n", sig)
	return shutdown(eng, sigs, graceFor(rc))
}

func start(ctx context.Context, eng *engine.Engine, rc runConfig) error {
	cfg := rc.Config
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if x, ok := eng.Exit(); ok {
		natsURL := eng.NATSURL()
		if u, err := url.Parse(natsURL); err == nil && u.User != nil {
			natsURL = u.Redacted()
		}
		if natsURL == "" { // the embedded server without a listener
			natsURL = "in-process"
		}
		fmt.Printf("exit %s serving: endpoint=%s public_key=%s nats=%s\n", x.ID, x.Endpoint, x.PublicKey, natsURL)
	}
	line := "ready"
	for _, spec := range cfg.Tunnels {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, err := eng.OpenTunnel(ctx, spec)
		if err != nil {
			return err
		}
		if len(cfg.Tunnels) > 1 {
			line += " tunnel=" + t.ID()
		}
		if a := t.SOCKSAddr(); a != "" {
			line += fmt.Sprintf(" socks5=%s", a)
		}
		if a := t.HTTPAddr(); a != "" {
			line += fmt.Sprintf(" http=%s", a)
		}
	}
	if rc.Pool != nil {
		p, err := pool.Open(ctx, eng, *rc.Pool)
		if err != nil {
			return err
		}
		slots, err := p.Slots(ctx)
		if err != nil {
			return err
		}
		up := 0
		for _, s := range slots {
			if s.State == messages.SlotUp {
				up++
			}
		}
		line += fmt.Sprintf(" pool=%s slots=%d up=%d", p.Name(), len(slots), up)
		if r := p.SOCKSPorts(); r.Count > 0 {
			line += " pool_socks5=" + r.String()
		}
		if r := p.HTTPPorts(); r.Count > 0 {
			line += " pool_http=" + r.String()
		}
	}
	fmt.Println(line)
	return nil
}

// graceFor is shutdownGrace, or longer when a drain needs it: the longest of the exit's, the
// tunnels' and the pool's drain_timeout, and 10 s for the rest of the shutdown.
func graceFor(rc runConfig) time.Duration {
	drain := time.Duration(0)
	if rc.Exit != nil {
		drain = max(drain, time.Duration(rc.Exit.DrainTimeout))
	}
	for _, t := range rc.Tunnels {
		drain = max(drain, time.Duration(t.DrainTimeout))
	}
	if rc.Pool != nil {
		drain = max(drain, time.Duration(rc.Pool.Tunnel.DrainTimeout))
	}
	return max(shutdownGrace, drain+10*time.Second)
}

func shutdown(eng *engine.Engine, sigs <-chan os.Signal, grace time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- eng.Close(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "engine: shutdown: %v\n", err)
			return exitFailure
		}
		return exitOK
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "engine: %v again: forcing exit\n", sig)
		return exitForced
	}
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelWarn
	}
	return l
}

func keygen(args []string) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	identity := fs.Bool("identity", false, "print a client identity (ed25519) instead of a WireGuard key pair")
	operator := fs.Bool("operator", false, "print an operator key (ed25519) that signs certificates (engine certify)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *operator {
		k, err := signaling.NewOperatorKey()
		if err != nil {
			fmt.Fprintln(os.Stderr, "engine keygen:", err)
			return exitFailure
		}
		fmt.Printf("operator_key: %s\noperator: %s\n", k, k.Public())
		return exitOK
	}
	if *identity {
		id, err := signaling.NewIdentity()
		if err != nil {
			fmt.Fprintln(os.Stderr, "engine keygen:", err)
			return exitFailure
		}
		fmt.Printf("identity: %s\nclient_id: %s\n", id, id.ID())
		return exitOK
	}
	k, err := signaling.NewPrivateKey()
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine keygen:", err)
		return exitFailure
	}
	fmt.Printf("private_key: %s\npublic_key: %s\n", k, k.Public())
	return exitOK
}
