package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/signaling"
)

// Strategies: how a slot's exit is chosen among the eligible exits.
const (
	Spread      = "spread"       // fewest of this pool's slots first (then lowest announced load)
	LeastLoaded = "least_loaded" // lowest announced load (sessions per capacity, counting this pool's placements since)
	Random      = "random"
)

// Defaults.
const (
	DefaultSize     = 1
	DefaultMaxMoves = 16
	DefaultName     = "pool"
	// MaxSize bounds a pool (and its port ranges).
	MaxSize = 10000
)

// Config is a pool: Size slots, slot i behind the i-th port of SOCKSPorts (and of HTTPPorts), each
// with one tunnel to an exit chosen by Strategy among the directory's exits that pass Exits.
type Config struct {
	Name string `yaml:"name"` // names the pool's tunnels and events; default "pool"
	Size int    `yaml:"size"`
	// SOCKSPorts and HTTPPorts are port ranges, "127.0.0.1:20000-20099", one port per slot; at
	// least one of them; each must hold at least Size ports (Resize may grow to the range's size).
	SOCKSPorts string     `yaml:"socks_ports"`
	HTTPPorts  string     `yaml:"http_ports"`
	Exits      ExitFilter `yaml:"exits"`
	Strategy   string     `yaml:"strategy"`     // spread (default), least_loaded, random
	MaxPerExit int        `yaml:"max_per_exit"` // slots on one exit at most; 0: no cap
	Rotate     Rotation   `yaml:"rotate"`
	// MaxMoves bounds the slots opening, moving or being replaced at once (healing and rotation
	// together); default 16. Each move is a session request to an exit: keep it within the exits'
	// request_burst.
	MaxMoves int `yaml:"max_moves"`
	// Tunnel holds the settings every slot's tunnel shares (drain_timeout, health, connections,
	// auth, handshake, keepalive, pins, udp_bind...). Its name, exit, exits, socks and http are the
	// pool's to set: leave them empty.
	Tunnel engine.TunnelSpec `yaml:"tunnel"`
}

// ExitFilter picks the exits a pool may use: those of the engine's NATS exit directory (which holds
// only exits the engine trusts) unless NATS is false, together with its WireGuard exits (the files
// of WireGuardDir and the engine's wireguard_exits named in WireGuard). Empty: every exit in the
// directory.
type ExitFilter struct {
	Labels map[string]string `yaml:"labels"` // directory exits: every one must match the exit's announced label
	IDs    []string          `yaml:"ids"`    // if set, only these exits (directory ids, or "wg:" + name)
	// NATS: whether the pool uses the exits of the NATS exit directory; nil: true. false: only its
	// WireGuard exits (then WireGuardDir or WireGuard must name some, and Labels must be empty).
	NATS *bool `yaml:"nats"`
	// WireGuardDir is a directory of wg-quick files: each *.conf is a WireGuard exit whose id is
	// "wg:" + the file name without .conf (engine.LoadWireGuardDir). Read when the pool opens and at
	// every Update (engine run: every reload), not watched.
	WireGuardDir string `yaml:"wireguard_dir"`
	// WireGuard are ids ("wg:" + name) of the engine's own wireguard_exits that the pool may use.
	WireGuard []string `yaml:"wireguard"`
}

// UsesNATS reports whether the pool takes exits from the NATS exit directory (NATS unset or true).
func (f ExitFilter) UsesNATS() bool { return f.NATS == nil || *f.NATS }

// Rotation moves each slot to a fresh exit when its tunnel has been on one exit for MaxAge (give or
// take Jitter, a fraction of MaxAge: "10%").
type Rotation struct {
	MaxAge engine.Duration `yaml:"max_age"` // 0: no scheduled rotation
	Jitter string          `yaml:"jitter"`  // "10%": each slot's age limit is drawn from MaxAge ± 10%
}

// PortRange is an IP and a range of ports: slot i listens on First+i.
type PortRange struct {
	Addr  netip.Addr
	First uint16
	Count int
}

// Addr is slot i's address.
func (r PortRange) AddrOf(i int) string {
	return netip.AddrPortFrom(r.Addr, r.First+uint16(i)).String()
}

func (r PortRange) String() string {
	if r.Count == 0 {
		return ""
	}
	return fmt.Sprintf("%s-%d", netip.AddrPortFrom(r.Addr, r.First), int(r.First)+r.Count-1)
}

// ParsePortRange reads "IP:first-last" (or "IP:port", a range of one).
func ParsePortRange(s string) (PortRange, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return PortRange{}, errors.New("must be IP:first-last")
	}
	a, err := netip.ParseAddr(strings.Trim(s[:i], "[]"))
	if err != nil {
		return PortRange{}, fmt.Errorf("%q is not an IP address", cut(s[:i]))
	}
	if a.IsUnspecified() {
		return PortRange{}, fmt.Errorf("must be one address, not %s (every interface)", a)
	}
	lo, hi, isRange := strings.Cut(s[i+1:], "-")
	first, err1 := strconv.ParseUint(lo, 10, 16)
	last := first
	var err2 error
	if isRange {
		last, err2 = strconv.ParseUint(hi, 10, 16)
	}
	if err1 != nil || err2 != nil || first == 0 || last < first {
		return PortRange{}, fmt.Errorf("ports %q: must be first-last with 1 ≤ first ≤ last ≤ 65535", cut(s[i+1:]))
	}
	return PortRange{Addr: a.Unmap(), First: uint16(first), Count: int(last-first) + 1}, nil
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// resolved is a checked Config.
type resolved struct {
	name        string
	size        int
	socks, http PortRange
	strategy    string
	maxPerExit  int
	maxMoves    int
	maxAge      time.Duration
	jitter      float64 // fraction of maxAge
	labels      map[string]string
	ids         map[string]bool
	nats        bool                             // exits of the NATS directory too
	wgDir       map[string]*actors.WireGuardExit // the files of wireguard_dir, by id, as last read
	wgNamed     []string                         // ids of the engine's wireguard_exits (exits.wireguard), sorted
}

func fieldErr(field, format string, args ...any) error {
	return &engine.FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks the configuration; an error is an *engine.FieldError naming the field under
// "pool" (and wraps engine.ErrInvalidConfig).
func (c *Config) Validate() error {
	_, err := c.resolve()
	return err
}

func (c *Config) resolve() (resolved, error) {
	r := resolved{name: c.Name, size: c.Size, strategy: c.Strategy, maxPerExit: c.MaxPerExit, maxMoves: c.MaxMoves, labels: c.Exits.Labels,
		nats: c.Exits.UsesNATS()}
	if r.name == "" {
		r.name = DefaultName
	} else if err := signaling.ValidID(r.name); err != nil || len(r.name) > 32 {
		return r, fieldErr("pool.name", "must be 1-32 of A-Z a-z 0-9 _ -")
	}
	if r.size < 0 || r.size > MaxSize {
		return r, fieldErr("pool.size", "%d not in [0, %d]", r.size, MaxSize)
	}
	if c.SOCKSPorts == "" && c.HTTPPorts == "" {
		return r, fieldErr("pool.socks_ports", "set socks_ports, http_ports, or both")
	}
	var err error
	for _, p := range []struct {
		field, in string
		out       *PortRange
	}{{"pool.socks_ports", c.SOCKSPorts, &r.socks}, {"pool.http_ports", c.HTTPPorts, &r.http}} {
		if p.in == "" {
			continue
		}
		if *p.out, err = ParsePortRange(p.in); err != nil {
			return r, fieldErr(p.field, "%v", err)
		}
		if p.out.Count < r.size {
			return r, fieldErr(p.field, "%d ports for %d slots", p.out.Count, r.size)
		}
	}
	if r.socks.Count > 0 && r.http.Count > 0 && r.socks.Addr == r.http.Addr { // whole ranges: a resize may grow into them
		sLast, hLast := int(r.socks.First)+r.socks.Count-1, int(r.http.First)+r.http.Count-1
		if int(r.socks.First) <= hLast && int(r.http.First) <= sLast {
			return r, fieldErr("pool.http_ports", "overlaps socks_ports")
		}
	}
	switch r.strategy {
	case "":
		r.strategy = Spread
	case Spread, LeastLoaded, Random:
	default:
		return r, fieldErr("pool.strategy", "%q is not one of spread, least_loaded, random", cut(r.strategy))
	}
	if r.maxPerExit < 0 {
		return r, fieldErr("pool.max_per_exit", "must not be negative (0: no cap)")
	}
	switch {
	case r.maxMoves == 0:
		r.maxMoves = DefaultMaxMoves
	case r.maxMoves < 0 || r.maxMoves > 1024:
		return r, fieldErr("pool.max_moves", "%d not in [1, 1024]", r.maxMoves)
	}
	if err := c.Exits.resolve(&r); err != nil {
		return r, err
	}
	r.maxAge = time.Duration(c.Rotate.MaxAge)
	if r.maxAge < 0 || (r.maxAge > 0 && r.maxAge < time.Second) {
		return r, fieldErr("pool.rotate.max_age", "%v: must be 0 (off) or at least 1s", r.maxAge)
	}
	if j := c.Rotate.Jitter; j != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(j), "%"), 64)
		if err != nil || !strings.HasSuffix(j, "%") || v < 0 || v > 50 {
			return r, fieldErr("pool.rotate.jitter", "%q: must be a percentage in [0%%, 50%%]", cut(j))
		}
		r.jitter = v / 100
	}
	t := c.Tunnel
	for _, f := range []struct{ field, v string }{{"name", t.Name}, {"exit", t.Exit}, {"socks", t.SOCKS}, {"http", t.HTTP}} {
		if f.v != "" {
			return r, fieldErr("pool.tunnel."+f.field, "set by the pool: leave it empty")
		}
	}
	if len(t.Exits) > 0 {
		return r, fieldErr("pool.tunnel.exits", "set by the pool: leave it empty (filter exits with pool.exits)")
	}
	t.Exit, t.SOCKS = "pool-check", "127.0.0.1:0"
	if err := engine.CheckTunnelSpec(t, "pool.tunnel"); err != nil {
		return r, err
	}
	return r, nil
}

// resolve checks the filter into r, reading wireguard_dir. Errors name the field under
// "pool.exits"; a file of wireguard_dir that does not parse is named with its line and key.
func (f ExitFilter) resolve(r *resolved) error {
	if err := signaling.ValidLabels(f.Labels); err != nil {
		return fieldErr("pool.exits.labels", "%v", err)
	}
	if f.WireGuardDir != "" {
		wg, err := engine.LoadWireGuardDir(f.WireGuardDir)
		if err != nil {
			return fieldErr("pool.exits.wireguard_dir", "%w", err)
		}
		r.wgDir = wg
	}
	for i, id := range f.WireGuard {
		field := fmt.Sprintf("pool.exits.wireguard[%d]", i)
		name, ok := strings.CutPrefix(id, actors.WireGuardPrefix)
		if !ok {
			return fieldErr(field, "%q: the id of a WireGuard exit, \"wg:\" + its name", cut(id))
		}
		if err := signaling.ValidID(name); err != nil {
			return fieldErr(field, "%v", err)
		}
		if r.wgDir[id] != nil {
			return fieldErr(field, "%s is also a file of wireguard_dir: name it once", id)
		}
		if !slices.Contains(r.wgNamed, id) {
			r.wgNamed = append(r.wgNamed, id)
		}
	}
	slices.Sort(r.wgNamed)
	if len(f.IDs) > 0 {
		r.ids = map[string]bool{}
		for i, id := range f.IDs {
			field := fmt.Sprintf("pool.exits.ids[%d]", i)
			if name, ok := strings.CutPrefix(id, actors.WireGuardPrefix); ok {
				if err := signaling.ValidID(name); err != nil {
					return fieldErr(field, "%v", err)
				}
				if r.wgDir[id] == nil && !slices.Contains(r.wgNamed, id) {
					return fieldErr(field, "%s is neither a file of wireguard_dir nor in exits.wireguard", id)
				}
			} else if err := signaling.ValidID(id); err != nil {
				return fieldErr(field, "%v", err)
			}
			r.ids[id] = true
		}
	}
	if !r.nats {
		if f.WireGuardDir == "" && len(f.WireGuard) == 0 {
			return fieldErr("pool.exits.nats", "false leaves the pool no exits: set wireguard_dir or wireguard")
		}
		if len(f.Labels) > 0 {
			return fieldErr("pool.exits.labels", "labels filter the NATS directory's exits, which nats: false leaves out")
		}
	}
	return nil
}
