package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/pool"
	"github.com/warren-tunnel/warren/signaling"
)

// shutdownGrace bounds the graceful part of a shutdown after the first signal.
const shutdownGrace = 30 * time.Second

func demo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	socks := fs.String("socks", "127.0.0.1:1080", "SOCKS5 proxy listen address")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP proxy listen address")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	adminAddr := fs.String("admin", admin.DefaultListen, "admin API and status page address (off: none)")
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
	return serve(runConfig{Config: cfg}, "", nil, adminConfigOf(&admin.Config{Listen: *adminAddr}), true)
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (overrides log_level; default info)")
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
	override := func(c *runConfig) {
		if *level != "" {
			c.LogLevel = *level
		}
		// An operator's engine waits for NATS and its exits rather than exiting: tunnels retry,
		// and /readyz says what is missing. (Not with the embedded server: nothing to wait for.)
		if len(c.NATS.URLs) > 0 {
			c.NATS.WaitOnStart = true
		}
	}
	override(&cfg)
	return serve(cfg, *path, override, adminConfigOf(cfg.Admin), false)
}

// check validates a config file as run does, and starts nothing.
func check(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "engine check: --config FILE is required (and nothing else)")
		return exitUsage
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine check: %v\n", err)
		return exitUsage
	}
	var parts []string
	if cfg.Exit != nil {
		parts = append(parts, "exit "+cfg.Exit.ID)
	}
	parts = append(parts, fmt.Sprintf("%d tunnel(s)", len(cfg.Tunnels)), fmt.Sprintf("%d WireGuard exit(s)", len(cfg.WireGuardExits)))
	if cfg.Pool != nil {
		parts = append(parts, fmt.Sprintf("pool of %d slot(s)", cfg.Pool.Size))
	}
	fmt.Printf("%s: ok: %s\n", *path, strings.Join(parts, ", "))
	return exitOK
}

// runConfig is the file `engine run` reads: the engine's configuration and, optionally, a pool.
type runConfig struct {
	engine.Config `yaml:",inline"`
	Pool          *pool.Config  `yaml:"pool"`
	Admin         *admin.Config `yaml:"admin"`
}

func (c *runConfig) validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if a := adminConfigOf(c.Admin); a != nil {
		if err := a.Validate(); err != nil {
			return err
		}
	}
	if c.Pool != nil {
		if err := c.Pool.Validate(); err != nil {
			return err
		}
		known := map[string]bool{}
		for _, w := range c.WireGuardExits {
			known[actors.WireGuardPrefix+w.Name] = true
		}
		for i, id := range c.Pool.Exits.WireGuard {
			if !known[id] {
				return &engine.FieldError{Field: fmt.Sprintf("pool.exits.wireguard[%d]", i),
					Err: fmt.Errorf("%w: %q is not among wireguard_exits", engine.ErrUnknownExit, id)}
			}
		}
		if c.Pool.Exits.UsesNATS() && c.NATS.Shared() && !c.Trust.AnyExit && len(c.Trust.Operators) == 0 {
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

// parseLevel reads a checked log level; "" is info.
func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
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
