package main

// The CLI over the admin API: `engine status`, `engine tunnels`, `engine close NAME`... Each takes
// --admin ADDR (default $WARREN_ADMIN, else 127.0.0.1:9090) and --token (default
// $WARREN_ADMIN_TOKEN), prints a human-readable table, or JSON with --json, and exits 0 on
// success, 1 when the call failed (the API's error code and message on stderr), 2 on bad usage.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-tunnel/warren/admin"
)

// cliCommand is one CLI command: its usage line, its positional arguments, and what it does.
type cliCommand struct {
	usage string
	args  func(n int) bool // accepts n positional arguments
	run   func(ctx context.Context, c *admin.Client, args []string, o cliOut) error
}

// cliOut is where a command prints: JSON or a table.
type cliOut struct {
	json bool
	w    io.Writer
}

func (o cliOut) print(v any, table func(tw *tabwriter.Writer)) error {
	if o.json {
		enc := json.NewEncoder(o.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// cliTimeout bounds a call; mutating calls wait for their transition (a drain, a switch).
const cliTimeout = 5 * time.Minute

func exactly(k int) func(int) bool { return func(n int) bool { return n == k } }

var cliCommands = map[string]cliCommand{
	"status": {"engine status", exactly(0), cliStatus},
	"tunnels": {"engine tunnels", exactly(0), func(ctx context.Context, c *admin.Client, _ []string, o cliOut) error {
		ts, err := c.Tunnels(ctx)
		if err != nil {
			return err
		}
		return o.print(ts, func(tw *tabwriter.Writer) { tunnelTable(tw, ts) })
	}},
	"tunnel": {"engine tunnel NAME", exactly(1), func(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
		t, err := c.Tunnel(ctx, a[0])
		if err != nil {
			return err
		}
		return o.print(t, func(tw *tabwriter.Writer) { tunnelTable(tw, []admin.Tunnel{t}); endsTable(tw, t.Connections) })
	}},
	"connections": {"engine connections [TUNNEL]", func(n int) bool { return n <= 1 }, func(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
		name := ""
		if len(a) == 1 {
			name = a[0]
		}
		cs, err := c.Connections(ctx, name)
		if err != nil {
			return err
		}
		return o.print(cs, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "TUNNEL\tID\tKIND\tSOURCE\tTARGET\tEXIT\tAGE\tIN\tOUT")
			for _, x := range cs {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Tunnel, x.ID, x.Kind, x.Source, clean(x.Target), x.Exit,
					age(x.AgeSeconds), size(x.BytesIn), size(x.BytesOut))
			}
		})
	}},
	"exits": {"engine exits", exactly(0), func(ctx context.Context, c *admin.Client, _ []string, o cliOut) error {
		xs, err := c.Exits(ctx)
		if err != nil {
			return err
		}
		return o.print(xs, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "EXIT\tSTATE\tENDPOINT\tSESSIONS\tCAPACITY\tFLOWS\tLABELS\tVERSION")
			for _, x := range xs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", x.ID, x.State, x.Endpoint, x.Sessions, x.Capacity, x.Flows,
					labels(x.Labels), x.Version)
			}
		})
	}},
	"close":  {"engine close NAME [--drain 5s]", exactly(1), nil},       // set in init: needs its own flag
	"switch": {"engine switch NAME EXIT [--drain 5s]", exactly(2), nil}, // likewise
	"reconnect": {"engine reconnect NAME", exactly(1), func(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
		t, err := c.ReconnectTunnel(ctx, a[0])
		if err != nil {
			return err
		}
		return o.print(t, func(tw *tabwriter.Writer) { tunnelTable(tw, []admin.Tunnel{t}) })
	}},
	"pool": {"engine pool [resize N | rotate [SLOT...]]", func(n int) bool { return true }, cliPool},
	"reload": {"engine reload", exactly(0), func(ctx context.Context, c *admin.Client, _ []string, o cliOut) error {
		r, err := c.Reload(ctx)
		if err != nil {
			return err
		}
		return o.print(r, func(tw *tabwriter.Writer) { reloadTable(tw, r) })
	}},
	"drain-exit": {"engine drain-exit", exactly(0), func(ctx context.Context, c *admin.Client, _ []string, o cliOut) error {
		x, err := c.DrainExit(ctx)
		if err != nil {
			return err
		}
		return o.print(x, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "exit %s drained and stopped\n", x.ID) })
	}},
}

// cli runs the CLI command name with args; drain is the --drain of close and switch.
func cli(name string, args []string) int {
	cmd := cliCommands[name]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("admin", envOr("WARREN_ADMIN", admin.DefaultListen), "admin API address (env WARREN_ADMIN)")
	token := fs.String("token", os.Getenv("WARREN_ADMIN_TOKEN"), "bearer token (env WARREN_ADMIN_TOKEN)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	drain := fs.Duration("drain", -1, "close, switch: how long connections may finish (default: the tunnel's drain_timeout)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--admin ADDR] [--token TOKEN] [--json]\n", cmd.usage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if !cmd.args(len(pos)) {
		fs.Usage()
		return exitUsage
	}
	run := cmd.run
	switch name {
	case "close":
		run = func(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
			if err := c.CloseTunnel(ctx, a[0], *drain); err != nil {
				return err
			}
			return o.print(map[string]string{"closed": a[0]}, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "tunnel %s closed\n", a[0]) })
		}
	case "switch":
		run = func(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
			t, err := c.SwitchTunnel(ctx, a[0], a[1], *drain)
			if err != nil {
				return err
			}
			return o.print(t, func(tw *tabwriter.Writer) { tunnelTable(tw, []admin.Tunnel{t}) })
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	c := admin.NewClient(*addr, *token)
	defer c.CloseIdleConnections()
	if err := run(ctx, c, pos, cliOut{json: *asJSON, w: os.Stdout}); err != nil {
		var ae *admin.Error
		if errors.As(err, &ae) {
			fmt.Fprintf(os.Stderr, "engine %s: %s: %s\n", name, ae.Code, clean(ae.Message))
		} else {
			fmt.Fprintf(os.Stderr, "engine %s: %v\n", name, err)
		}
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

var errUsage = errors.New("bad usage")

// parseInterspersed parses flags wherever they stand among the positional arguments
// (`engine close web --drain 2s`), which flag.Parse alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func cliStatus(ctx context.Context, c *admin.Client, _ []string, o cliOut) error {
	s, err := c.Status(ctx)
	if err != nil {
		return err
	}
	ready, rerr := c.Readyz(ctx)
	if rerr != nil {
		return rerr
	}
	v := struct {
		admin.Status
		Ready admin.Health `json:"ready"`
	}{s, ready}
	return o.print(v, func(tw *tabwriter.Writer) {
		nats := "disconnected"
		if s.NATS.Connected {
			nats = "connected"
		}
		fmt.Fprintf(tw, "version\t%s\n", s.Version)
		fmt.Fprintf(tw, "role\t%s\n", s.Role)
		fmt.Fprintf(tw, "uptime\t%s\n", age(s.UptimeSeconds))
		lastErr := ""
		if !s.NATS.Connected {
			lastErr = clean(s.NATS.LastError)
		}
		fmt.Fprintf(tw, "nats\t%s %s\t%s\n", nats, s.NATS.URL, lastErr)
		if s.Exit != nil {
			state := "serving"
			if s.Exit.Draining {
				state = "draining"
			} else if !s.Exit.Serving {
				state = "stopped"
			}
			fmt.Fprintf(tw, "exit\t%s %s\tsessions=%d flows=%d addresses=%d/%d\n", s.Exit.ID, state, s.Exit.Sessions, s.Exit.Flows,
				s.Exit.AddressesUsed, s.Exit.AddressesTotal)
		}
		fmt.Fprintf(tw, "tunnels\t%d\t%s\n", s.Tunnels.Total, counts(s.Tunnels.ByState))
		if s.Pool != nil {
			fmt.Fprintf(tw, "pool\t%s %d slots\t%s\n", s.Pool.Name, s.Pool.Slots.Total, counts(s.Pool.Slots.ByState))
		}
		fmt.Fprintf(tw, "connections\tclient=%d exit=%d\n", s.Conns.Client, s.Conns.Exit)
		if ready.OK {
			fmt.Fprintln(tw, "ready\tyes")
		} else {
			fmt.Fprintf(tw, "ready\tno\t%s\n", clean(strings.Join(ready.Problems, "; ")))
		}
		for k, n := range s.Problems {
			fmt.Fprintf(tw, "problem\t%s\t%d\n", k, n)
		}
	})
}

func cliPool(ctx context.Context, c *admin.Client, a []string, o cliOut) error {
	switch {
	case len(a) == 0:
		p, err := c.Pool(ctx)
		if err != nil {
			return err
		}
		return o.print(p, func(tw *tabwriter.Writer) { poolTable(tw, p) })
	case a[0] == "resize" && len(a) == 2:
		n, err := strconv.Atoi(a[1])
		if err != nil || n < 0 {
			return fmt.Errorf("%w: pool resize N: %q is not a size", errUsage, a[1])
		}
		p, err := c.ResizePool(ctx, n)
		if err != nil {
			return err
		}
		return o.print(p, func(tw *tabwriter.Writer) { poolTable(tw, p) })
	case a[0] == "rotate":
		var slots []int
		for _, s := range a[1:] {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return fmt.Errorf("%w: pool rotate [SLOT...]: %q is not a slot", errUsage, s)
			}
			slots = append(slots, n)
		}
		r, err := c.RotatePool(ctx, slots...)
		if err != nil {
			return err
		}
		return o.print(r, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "moved\t%d\nfailed\t%d\n", r.Moved, r.Failed)
			for _, f := range r.Errors {
				fmt.Fprintf(tw, "slot %d\t%s\t%s\n", f.Slot, f.Code, clean(f.Message))
			}
		})
	}
	return fmt.Errorf("%w: engine pool [resize N | rotate [SLOT...]]", errUsage)
}

func tunnelTable(tw *tabwriter.Writer, ts []admin.Tunnel) {
	fmt.Fprintln(tw, "NAME\tSTATE\tEXIT\tAGE\tACTIVE\tOPENED\tIN\tOUT\tSOCKS5\tHTTP\tCAUSE")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.State, t.Exit, age(t.AgeSeconds),
			t.Connections.Active, t.Connections.Opened, size(t.Connections.BytesIn), size(t.Connections.BytesOut),
			dash(t.SOCKS), dash(t.HTTP), clean(t.Cause))
	}
}

func endsTable(tw *tabwriter.Writer, c admin.ConnStats) {
	for _, side := range slices.Sorted(maps.Keys(c.Ends)) {
		fmt.Fprintf(tw, "ended (%s)\t%s\n", side, countsU(c.Ends[side]))
	}
}

func poolTable(tw *tabwriter.Writer, p admin.Pool) {
	fmt.Fprintf(tw, "pool %s: %d slots\t%s\n", p.Name, p.Size, counts(p.States.ByState))
	_ = tw.Flush() // a block of its own: its columns are not the slots'

	fmt.Fprintln(tw, "SLOT\tSTATE\tEXIT\tAGE\tMOVES\tACTIVE\tIN\tOUT\tSOCKS5\tHTTP\tCAUSE")
	for _, s := range p.Slots {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Index, s.State, dash(s.Exit), age(s.AgeSeconds), s.Moves,
			s.Connections.Active, size(s.Connections.BytesIn), size(s.Connections.BytesOut), dash(s.SOCKS), dash(s.HTTP), clean(s.Cause))
	}
}

func reloadTable(tw *tabwriter.Writer, r admin.ReloadResult) {
	for _, row := range []struct {
		what string
		list []string
	}{{"wireguard exits", r.WireGuard}, {"opened", r.Opened}, {"closed", r.Closed}, {"switched", r.Switched}, {"updated", r.Updated}, {"replaced", r.Replaced},
		{"pool", r.Pool}, {"needs restart", r.NeedsRestart}, {"errors", r.Errors}} {
		if len(row.list) > 0 {
			fmt.Fprintf(tw, "%s\t%s\n", row.what, clean(strings.Join(row.list, ", ")))
		}
	}
	if r.LogLevel != "" {
		fmt.Fprintf(tw, "log level\t%s\n", r.LogLevel)
	}
	fmt.Fprintf(tw, "unchanged\t%d\n", r.Unchanged)
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	return strings.Join(parts, " ")
}

func countsU(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func labels(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return dash(strings.Join(parts, ","))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

// clean makes a string safe to print to a terminal: causes carry exits' messages and targets carry
// what proxy clients sent, either of which could hold escape sequences. Control characters become
// U+FFFD; tabs too (they would break the table).
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '\uFFFD'
		}
		return r
	}, s)
}

// age prints seconds as a short duration: 45s, 12m3s, 5h2m, 3d4h.
func age(sec float64) string {
	d := time.Duration(sec) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// size prints a byte count with a binary unit.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
