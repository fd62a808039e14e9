package engine

// Ranges and cross-field checks of the configuration (docs/configuration.md, "Ranges"), and the
// cap on how much of an offending value an error message echoes.

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warren-tunnel/warren/signaling"
)

// echoLimit is how many bytes of an offending value an error message repeats; maxMessage caps a
// whole FieldError message, whatever a library put in it.
const (
	echoLimit  = 64
	maxMessage = 512
	maxField   = 128
)

// echoValue is s as an error message may repeat it: at most echoLimit bytes, then "…".
func echoValue(s string) string { return cut(s, echoLimit) }

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// scrubbed is an error whose message no longer repeats a long value whole; it unwraps to the
// original.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub returns err, unwrapping to it, with a message that repeats at most echoLimit bytes of
// value: parsers (netip, net, url, time, os) repeat their whole input, or long parts of it. Every
// copy of value (as is or Go-quoted) is cut; if the message is still long, a part of value was
// repeated and the message says only what was wrong with how long a value.
func scrub(err error, value string) error {
	if err == nil || len(value) <= echoLimit {
		return err
	}
	short := echoValue(value)
	msg := strings.ReplaceAll(err.Error(), value, short)
	if q := strconv.Quote(value); len(q) > 2 {
		msg = strings.ReplaceAll(msg, q[1:len(q)-1], strings.Trim(strconv.Quote(short), `"`))
	}
	if len(msg) > maxScrubbed {
		msg = fmt.Sprintf("%q: not valid (%d bytes)", short, len(value))
	}
	return &scrubbed{msg: msg, err: err}
}

// maxScrubbed: a library message with its copy of the value cut to echoLimit bytes is shorter.
const maxScrubbed = 192

// durationIn resolves a duration field: 0 takes def; negative is an error unless offOK, when it
// means off and resolves to 0; otherwise it must lie in [lo, hi].
func durationIn(field string, d Duration, def, lo, hi time.Duration, offOK bool) (time.Duration, error) {
	v := time.Duration(d)
	switch {
	case v == 0:
		return def, nil
	case v < 0 && offOK:
		return 0, nil
	case v >= lo && v <= hi:
		return v, nil
	}
	special := fmt.Sprintf("0: default %v", def)
	if def == 0 {
		special = "0: none"
	}
	if offOK {
		special += ", negative: off"
	}
	return 0, fieldErr(field, "%v not in [%v, %v] (%s)", v, lo, hi, special)
}

// countIn resolves a count field: 0 takes def; -1 means minus1 ("unlimited", "off"; "": not
// allowed) and resolves to 0 for the actors; others must lie in [1, hi].
func countIn(field string, v, def, hi int, minus1 string) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case v == -1 && minus1 != "":
		return 0, nil
	case v >= 1 && v <= hi:
		return v, nil
	}
	if minus1 != "" {
		return 0, fieldErr(field, "%d not in [1, %d] (0: default %d, -1: %s)", v, hi, def, minus1)
	}
	return 0, fieldErr(field, "%d not in [1, %d] (0: default %d)", v, hi, def)
}

// Ranges of the fields that have no obvious one (docs/configuration.md, "Ranges").
const (
	minTimeout    = 100 * time.Millisecond // dials, handshakes, connections' timers
	maxTimeout    = 5 * time.Minute        // dials and handshakes
	maxIdle       = 7 * 24 * time.Hour     // idle timers of connections
	maxLifetime   = 365 * 24 * time.Hour
	maxConns      = 1_000_000 // connections or flows at once
	maxSessions   = 65536     // sessions of one client at one exit
	maxRate       = 1e6       // session requests per second
	minRate       = 1e-3      // one request every ~17 minutes
	maxHealthRuns = 100       // failures in a row
)

// parseListen checks a TCP listen address: an IP literal (IPv6 in brackets), a numeric port
// 0-65535 (0: any free one). Names, "localhost" included, are refused: what is bound must be
// known here, to find clashes and to know whether the address is loopback.
func parseListen(field, s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fieldErr(field, "%q: want IP:port (port 0 picks a free one): %w", echoValue(s), scrub(err, s))
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fieldErr(field, "host %q is not an IP address: write 127.0.0.1 or [::1] for this host only, "+
			"0.0.0.0 or [::] for every interface", echoValue(host))
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fieldErr(field, "port %q not in 0-65535", echoValue(port))
	}
	if a.IsMulticast() {
		return netip.AddrPort{}, fieldErr(field, "%s is a multicast address", a)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// listensClash reports whether two TCP listeners cannot both bind: the same port (not 0) on the
// same address, or on any address when one of them is unspecified (Go listens on 0.0.0.0 with a
// dual-stack [::] socket).
func listensClash(a, b netip.AddrPort) bool {
	if a.Port() == 0 || a.Port() != b.Port() {
		return false
	}
	x, y := a.Addr().Unmap(), b.Addr().Unmap()
	return x == y || x.IsUnspecified() || y.IsUnspecified()
}

type listenUse struct {
	field string
	ap    netip.AddrPort
}

// checkListens finds TCP listen addresses that clash: the proxies of all tunnels and the embedded
// NATS server's listener. The error names both fields.
func (c *Config) checkListens() error {
	var uses []listenUse
	add := func(field, s string) error {
		if s == "" {
			return nil
		}
		ap, err := parseListen(field, s)
		if err != nil {
			return err
		}
		for _, u := range uses {
			if listensClash(u.ap, ap) {
				return fieldErr(field, "%s clashes with %s (%s): each listener needs its own address and port", ap, u.field, u.ap)
			}
		}
		uses = append(uses, listenUse{field, ap})
		return nil
	}
	if err := add("nats.embedded_listen", c.NATS.EmbeddedListen); err != nil {
		return err
	}
	for i, t := range c.Tunnels {
		path := fmt.Sprintf("tunnels[%d]", i)
		if err := add(path+".socks", t.SOCKS); err != nil {
			return err
		}
		if err := add(path+".http", t.HTTP); err != nil {
			return err
		}
	}
	return nil
}

// checkProxyListens checks one tunnel's proxy addresses, which must differ from each other.
func (t *TunnelSpec) checkProxyListens(path string) error {
	if t.SOCKS == "" && t.HTTP == "" {
		return fieldErr(path+".socks", "set socks or http (or both)")
	}
	var socks netip.AddrPort
	if t.SOCKS != "" {
		var err error
		if socks, err = parseListen(path+".socks", t.SOCKS); err != nil {
			return err
		}
	}
	if t.HTTP != "" {
		http, err := parseListen(path+".http", t.HTTP)
		if err != nil {
			return err
		}
		if t.SOCKS != "" && listensClash(socks, http) {
			return fieldErr(path+".http", "%s clashes with %s.socks (%s): the proxies need their own ports", http, path, socks)
		}
	}
	return nil
}

// checkExits: the exit and the failover exits name different exits; pins' keys are exit ids.
func (t *TunnelSpec) checkExits(path string) error {
	seen := map[string]string{t.Exit: path + ".exit"}
	for i, x := range t.Exits {
		field := fmt.Sprintf("%s.exits[%d]", path, i)
		if err := validExitRef(x); err != nil {
			return fieldErr(field, "%w", err)
		}
		if first, dup := seen[x]; dup {
			return fieldErr(field, "exit %q is already %s", x, first)
		}
		seen[x] = field
	}
	for id := range t.Pins {
		if err := signaling.ValidID(id); err != nil {
			return fieldErr(path+".pins", "key: %w", err)
		}
	}
	return nil
}

// checkSubnet: a private or CGNAT IPv4 prefix from /8 to /30, or a unique-local IPv6 prefix from
// /48 to /126. The tunnel addresses exist only inside the tunnels, so they must never be
// addresses the exit or its clients may also reach outside them.
func checkSubnet(p netip.Prefix) error {
	p = p.Masked()
	if p.Addr().Is4() {
		if p.Bits() < 8 || p.Bits() > 30 {
			return fieldErr("exit.subnet", "%s: an IPv4 subnet is /8 to /30 (room for the exit, clients, network and broadcast)", p)
		}
		for _, r := range []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("100.64.0.0/10")} {
			if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
				return nil
			}
		}
		return fieldErr("exit.subnet", "%s is not inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10 (CGNAT)", p)
	}
	if p.Addr().Is4In6() {
		return fieldErr("exit.subnet", "%s: write an IPv4 subnet as such", p)
	}
	if p.Bits() < 48 || p.Bits() > 126 {
		return fieldErr("exit.subnet", "%s: an IPv6 subnet is /48 to /126", p)
	}
	if !netip.MustParsePrefix("fc00::/7").Contains(p.Addr()) {
		return fieldErr("exit.subnet", "%s is not inside fc00::/7 (unique local)", p)
	}
	return nil
}

// checkStaticPeers: names and keys are unique and not the exit's own; every address lies inside
// the subnet, is neither the exit's address nor the subnet's network or broadcast address, and
// belongs to one peer only. Errors name both fields of a clash.
func checkStaticPeers(x *ExitConfig, r *resolvedExit) error {
	subnet := r.subnet.Masked()
	exitAddr := subnet.Addr().Next()
	names := map[string]string{}
	keys := map[signaling.Key]string{}
	if x.PrivateKey != "" {
		keys[r.key.Public()] = "exit.private_key"
	}
	addrs := map[netip.Addr]string{}
	for i, sp := range x.StaticPeers {
		path := fmt.Sprintf("exit.static_peers[%d]", i)
		p := r.static[i]
		if sp.Name != "" {
			if err := signaling.ValidID(sp.Name); err != nil {
				return fieldErr(path+".name", "%w", err)
			}
		}
		if first, dup := names[p.name]; dup {
			return fieldErr(path+".name", "%q is also %s", p.name, first)
		}
		names[p.name] = path + ".name"
		if first, dup := keys[p.key]; dup {
			if first == "exit.private_key" {
				return fieldErr(path+".public_key", "is the exit's own public key")
			}
			return fieldErr(path+".public_key", "is also %s", first)
		}
		keys[p.key] = path + ".public_key"
		for j, a := range p.addrs {
			field := fmt.Sprintf("%s.allowed_ips[%d]", path, j)
			switch {
			case !subnet.Contains(a):
				return fieldErr(field, "%s is outside exit.subnet %s", a, subnet)
			case a == exitAddr:
				return fieldErr(field, "%s is the exit's own address (the first of exit.subnet)", a)
			case a == subnet.Addr():
				return fieldErr(field, "%s is exit.subnet's network address", a)
			case a.Is4() && !subnet.Contains(a.Next()):
				return fieldErr(field, "%s is exit.subnet's broadcast address", a)
			}
			if first, dup := addrs[a]; dup {
				return fieldErr(field, "%s is also %s", a, first)
			}
			addrs[a] = field
		}
	}
	return nil
}

// checkNATSURLs: each entry is one server, as nats.go reads it: [nats|tls|ws|wss://][user@]host[:port].
// Messages never repeat a URL: it may hold a password.
func checkNATSURLs(urls []string) error {
	ws := 0
	for i, u := range urls {
		field := fmt.Sprintf("nats.urls[%d]", i)
		if u == "" {
			return fieldErr(field, "empty")
		}
		if strings.ContainsAny(u, ", \t\r\n") {
			return fieldErr(field, "one server per entry (no commas or spaces)")
		}
		s := u
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		pu, err := url.Parse(s)
		if err != nil {
			return fieldErr(field, "not a URL")
		}
		switch pu.Scheme {
		case "nats", "tls":
		case "ws", "wss":
			ws++
		default:
			return fieldErr(field, "scheme %q: want nats://, tls://, ws:// or wss://", echoValue(pu.Scheme))
		}
		if pu.Hostname() == "" || len(pu.Hostname()) > 253 {
			return fieldErr(field, "want a host of 1-253 bytes")
		}
		if port := pu.Port(); port != "" {
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				return fieldErr(field, "port %q not in 1-65535", echoValue(port))
			}
		}
	}
	if ws != 0 && ws != len(urls) {
		return fieldErr("nats.urls", "websocket (ws://, wss://) and other servers cannot be mixed")
	}
	return nil
}

// maxConfigFile bounds a file a config names (certificates, keys, seeds, credentials).
const maxConfigFile = 1 << 20

var errNotRegular = errors.New("not a regular file")

// checkConfigFile refuses what is not a small regular file (a device or a pipe would block the
// check, or never end).
func checkConfigFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return scrub(err, path)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w", echoValue(path), errNotRegular)
	}
	if fi.Size() > maxConfigFile {
		return fmt.Errorf("%s: %d bytes, over %d", echoValue(path), fi.Size(), maxConfigFile)
	}
	return nil
}

// readConfigFile reads a small regular file a config names.
func readConfigFile(path string) ([]byte, error) {
	if err := checkConfigFile(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	return data, scrub(err, path)
}

// checkRate: requests_per_second is -1 (unlimited), 0 (default) or a finite rate in [minRate, maxRate].
func checkRate(v float64) (float64, error) {
	switch {
	case v == -1:
		return 0, nil
	case v == 0:
		return DefaultRequestsPerSecond, nil
	case !math.IsNaN(v) && v >= minRate && v <= maxRate:
		return v, nil
	}
	return 0, fieldErr("exit.requests_per_second", "%v not in [%v, %v] (0: default %d, -1: unlimited)", v, minRate, maxRate, DefaultRequestsPerSecond)
}
