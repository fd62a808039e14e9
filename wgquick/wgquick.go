// Package wgquick parses wg-quick configuration files strictly.
//
// The format is that of wg(8)'s configuration files with wg-quick(8)'s extra [Interface] keys
// (Address, DNS, MTU): an [Interface] section, exactly once, and one or more [Peer] sections.
// Section and key names match case-insensitively, as wg-quick matches them; '#' starts a comment
// anywhere on a line; a UTF-8 byte order mark at the start and CRLF line endings are accepted.
//
// Everything else is an error that names the file, the line and the key: a line outside a section
// or without '=', an unknown section or key, a key given twice in a section (Address, DNS and
// AllowedIPs may repeat and accumulate), a missing required key, a key that is not the standard
// base64 encoding of 32 bytes, a value out of range. wg-quick's hooks and host settings (PreUp,
// PostUp, PreDown, PostDown, Table, SaveConfig, FwMark) cannot be honoured in userspace and are
// refused with ErrUnsupportedKey.
//
// Errors never contain the value of a PrivateKey or PresharedKey line, and the package logs
// nothing. Config, Interface and Peer render themselves (fmt's verbs, slog) with the secret keys
// replaced by "(hidden)".
package wgquick

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxSize is the largest configuration file Parse reads, in bytes.
const MaxSize = 1 << 20

// Sentinel errors, wrapped in Error.Err; test with errors.Is.
var (
	// ErrSyntax is a line that is not a section header, a comment or "Key = Value", a key line
	// outside a section, or bytes that are not text (control characters, invalid UTF-8).
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownSection is a section other than [Interface] and [Peer].
	ErrUnknownSection = errors.New("unknown section")
	// ErrUnknownKey is a key that wg(8) and wg-quick(8) do not have in its section.
	ErrUnknownKey = errors.New("unknown key")
	// ErrUnsupportedKey is a wg-quick key that Warren cannot honour in userspace: the hooks PreUp,
	// PostUp, PreDown and PostDown, and Table, SaveConfig and FwMark.
	ErrUnsupportedKey = errors.New("not supported in userspace")
	// ErrDuplicate is a single-valued key given twice in a section, a second [Interface]
	// section, or two [Peer] sections with the same PublicKey.
	ErrDuplicate = errors.New("duplicate")
	// ErrMissing is a missing [Interface] or [Peer] section, or a section without a required key
	// (PrivateKey and Address in [Interface], PublicKey in [Peer]).
	ErrMissing = errors.New("missing")
	// ErrBadKey is a PrivateKey, PublicKey or PresharedKey that is not the standard base64
	// encoding of 32 bytes, or an all-zero private or public key, or a public key equal to a
	// secret key of the same file.
	ErrBadKey = errors.New("invalid key")
	// ErrBadValue is any other value that is malformed or out of range.
	ErrBadValue = errors.New("invalid value")
	// ErrTooLarge is an input over MaxSize bytes.
	ErrTooLarge = errors.New("too large")
)

// Config is a parsed wg-quick configuration file.
type Config struct {
	Interface Interface
	Peers     []Peer // at least one; a Warren WireGuard exit uses exactly one (the caller checks)
}

// Interface is the [Interface] section.
type Interface struct {
	PrivateKey [32]byte       // required; never all zero
	Addresses  []netip.Prefix // at least one; an address without a prefix length is /32 or /128; not masked
	DNS        []netip.Addr   // the DNS entries that are IP addresses
	DNSSearch  []string       // the DNS entries that are not (search domains), as wg-quick sorts them
	MTU        int            // 0 = unset; else 1280..9000
	ListenPort int            // 0 = unset (or written as 0: a random port); else 1..65535
}

// Peer is a [Peer] section.
type Peer struct {
	PublicKey    [32]byte  // required; never all zero
	PresharedKey *[32]byte // nil = none
	// Endpoint is host:port as written: the host a name, an IPv4 address, or an IPv6 address in
	// brackets (without a zone); the port 1..65535. Empty = unset; the parser requires none.
	Endpoint            string
	AllowedIPs          []netip.Prefix // canonical (Masked); an address without a length is /32 or /128
	PersistentKeepalive int            // seconds; 0 = off ("off" or 0 in the file); else 1..65535
}

// Error is a malformed configuration: the file, the line (0 for the file as a whole) and the key
// (empty for errors about a line or a section).
type Error struct {
	File string
	Line int
	Key  string
	Err  error
}

// Error renders "file:line: key: message", leaving out a zero line and an empty key.
func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		s += ": " + e.Key
	}
	return fmt.Sprintf("%s: %v", s, e.Err)
}

// Unwrap returns the wrapped error, which wraps one of the sentinel errors.
func (e *Error) Unwrap() error { return e.Err }

// ParseFile reads and parses the wg-quick configuration file at path; errors name path.
func ParseFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wgquick: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads and parses a wg-quick configuration of at most MaxSize bytes from r; name (the file
// name) is what errors name.
func Parse(name string, r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, &Error{File: name, Err: fmt.Errorf("read: %w", err)}
	}
	if len(data) > MaxSize {
		return nil, &Error{File: name, Err: fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxSize)}
	}
	p := parser{file: name, publicKeys: map[[32]byte]int{}, secrets: map[[32]byte]bool{}}
	return p.parse(string(data))
}

// Canonical key names, and the section each belongs to.
var (
	interfaceKeys = canon("PrivateKey", "Address", "DNS", "MTU", "ListenPort")
	peerKeys      = canon("PublicKey", "PresharedKey", "Endpoint", "AllowedIPs", "PersistentKeepalive")
	// unsupportedKeys are refused with ErrUnsupportedKey in [Interface].
	unsupportedKeys = canon("PreUp", "PostUp", "PreDown", "PostDown", "Table", "SaveConfig", "FwMark")
	// repeatable keys accumulate; every other key may appear once per section.
	repeatable = canon("Address", "DNS", "AllowedIPs")
)

func canon(names ...string) map[string]string {
	m := make(map[string]string, len(names))
	for _, n := range names {
		m[strings.ToLower(n)] = n
	}
	return m
}

const (
	sectionNone = iota
	sectionInterface
	sectionPeer
)

var sectionNames = [...]string{"", "[Interface]", "[Peer]"}

type parser struct {
	file       string
	cfg        Config
	section    int
	sectLine   int               // the current section's header line
	seen       map[string]int    // canonical key → line, in the current section
	ifaceLine  int               // the [Interface] header's line; 0 = none yet
	publicKeys map[[32]byte]int  // peer public key → its line
	secrets    map[[32]byte]bool // the private key and the preshared keys
}

func (p *parser) fail(line int, key string, err error) error {
	return &Error{File: p.file, Line: line, Key: key, Err: err}
}

func (p *parser) parse(s string) (*Config, error) {
	s = strings.TrimPrefix(s, "\ufeff")
	n := 0
	for line := range strings.SplitSeq(s, "\n") {
		n++
		if err := p.line(n, strings.TrimSuffix(line, "\r")); err != nil {
			return nil, err
		}
	}
	if err := p.closeSection(); err != nil {
		return nil, err
	}
	if p.ifaceLine == 0 {
		return nil, p.fail(0, "", fmt.Errorf("%w [Interface] section", ErrMissing))
	}
	if len(p.cfg.Peers) == 0 {
		return nil, p.fail(0, "", fmt.Errorf("%w [Peer] section", ErrMissing))
	}
	// A public key equal to a secret key would print the secret in String: refuse it.
	for _, peer := range p.cfg.Peers {
		if p.secrets[peer.PublicKey] {
			return nil, p.fail(p.publicKeys[peer.PublicKey], "PublicKey",
				fmt.Errorf("%w: equal to the PrivateKey or a PresharedKey of this file", ErrBadKey))
		}
	}
	cfg := p.cfg
	return &cfg, nil
}

// line parses one line (without its line ending).
func (p *parser) line(n int, line string) error {
	if !utf8.ValidString(line) {
		return p.fail(n, "", fmt.Errorf("%w: not valid UTF-8", ErrSyntax))
	}
	for _, r := range line {
		if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return p.fail(n, "", fmt.Errorf("%w: control character", ErrSyntax))
		}
	}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = trim(line)
	if line == "" {
		return nil
	}
	if line[0] == '[' {
		return p.header(n, line)
	}
	eq := strings.IndexByte(line, '=')
	if eq < 0 {
		// The line is echoed only if it is a known key's name: it may hold a secret.
		l := strings.ToLower(line)
		return p.fail(n, interfaceKeys[l]+peerKeys[l]+unsupportedKeys[l], fmt.Errorf("%w: want Key = Value", ErrSyntax))
	}
	key, value := trim(line[:eq]), trim(line[eq+1:])
	if !isName(key) {
		// Not echoed: a malformed line may hold a secret.
		return p.fail(n, "", fmt.Errorf("%w: invalid key name", ErrSyntax))
	}
	lower := strings.ToLower(key)
	var canonical string
	switch p.section {
	case sectionNone:
		return p.fail(n, key, fmt.Errorf("%w: key outside a section", ErrSyntax))
	case sectionInterface:
		if u, ok := unsupportedKeys[lower]; ok {
			return p.fail(n, u, ErrUnsupportedKey)
		}
		canonical = interfaceKeys[lower]
	case sectionPeer:
		canonical = peerKeys[lower]
	}
	if canonical == "" {
		return p.fail(n, key, fmt.Errorf("%w in %s", ErrUnknownKey, sectionNames[p.section]))
	}
	if first, dup := p.seen[canonical]; dup && repeatable[lower] == "" {
		return p.fail(n, canonical, fmt.Errorf("%w key (first on line %d)", ErrDuplicate, first))
	}
	p.seen[canonical] = n
	if err := p.set(canonical, value); err != nil {
		return p.fail(n, canonical, err)
	}
	return nil
}

// header opens the section of a "[Name]" line.
func (p *parser) header(n int, line string) error {
	if len(line) < 2 || line[len(line)-1] != ']' {
		return p.fail(n, "", fmt.Errorf("%w: malformed section header", ErrSyntax))
	}
	if err := p.closeSection(); err != nil {
		return err
	}
	name := line[1 : len(line)-1]
	switch strings.ToLower(name) {
	case "interface":
		if p.ifaceLine != 0 {
			return p.fail(n, "", fmt.Errorf("%w [Interface] section (first on line %d)", ErrDuplicate, p.ifaceLine))
		}
		p.section, p.ifaceLine = sectionInterface, n
	case "peer":
		p.section = sectionPeer
		p.cfg.Peers = append(p.cfg.Peers, Peer{})
	default:
		if isName(name) {
			return p.fail(n, "", fmt.Errorf("%w [%s]", ErrUnknownSection, name))
		}
		return p.fail(n, "", ErrUnknownSection)
	}
	p.sectLine, p.seen = n, map[string]int{}
	return nil
}

// closeSection checks the current section's required keys.
func (p *parser) closeSection() error {
	missing := func(key string) error {
		return p.fail(p.sectLine, key, fmt.Errorf("%w from %s section", ErrMissing, sectionNames[p.section]))
	}
	switch p.section {
	case sectionInterface:
		if _, ok := p.seen["PrivateKey"]; !ok {
			return missing("PrivateKey")
		}
		if len(p.cfg.Interface.Addresses) == 0 {
			return missing("Address")
		}
	case sectionPeer:
		if _, ok := p.seen["PublicKey"]; !ok {
			return missing("PublicKey")
		}
	}
	return nil
}

// set parses value into the key of the current section; the error is Error.Err.
func (p *parser) set(key, value string) error {
	iface := &p.cfg.Interface
	var peer *Peer
	if p.section == sectionPeer {
		peer = &p.cfg.Peers[len(p.cfg.Peers)-1]
	}
	switch key {
	case "PrivateKey", "PublicKey", "PresharedKey":
		k, err := parseKey(value, key == "PublicKey", key == "PresharedKey")
		if err != nil {
			return err
		}
		switch key {
		case "PrivateKey":
			iface.PrivateKey, p.secrets[k] = k, true
		case "PresharedKey":
			peer.PresharedKey, p.secrets[k] = &k, true
		default:
			if first, dup := p.publicKeys[k]; dup {
				return fmt.Errorf("%w peer (the [Peer] with this PublicKey on line %d)", ErrDuplicate, first)
			}
			peer.PublicKey, p.publicKeys[k] = k, p.seen["PublicKey"]
		}
	case "Address":
		return eachItem(value, true, func(item string) error {
			a, err := parsePrefix(item, false)
			if err != nil {
				return err
			}
			if a.Addr().IsUnspecified() || a.Addr().IsMulticast() {
				return fmt.Errorf("%w %s: not a unicast address", ErrBadValue, quote(item))
			}
			iface.Addresses = append(iface.Addresses, a)
			return nil
		})
	case "DNS":
		return eachItem(value, true, func(item string) error {
			// wg-quick's rule: digits and dots, or any colon, is a server; anything else a domain.
			if strings.Trim(item, "0123456789.") == "" || strings.Contains(item, ":") {
				a, err := netip.ParseAddr(item)
				if err != nil || a.Zone() != "" || a.IsUnspecified() {
					return fmt.Errorf("%w %s: not an IP address", ErrBadValue, quote(item))
				}
				iface.DNS = append(iface.DNS, a)
				return nil
			}
			if !isHostname(item) {
				return fmt.Errorf("%w %s: neither an IP address nor a search domain", ErrBadValue, quote(item))
			}
			iface.DNSSearch = append(iface.DNSSearch, item)
			return nil
		})
	case "MTU":
		return parseInt(value, 1280, 9000, &iface.MTU)
	case "ListenPort":
		return parseInt(value, 0, 65535, &iface.ListenPort)
	case "Endpoint":
		if err := checkEndpoint(value); err != nil {
			return err
		}
		peer.Endpoint = value
	case "AllowedIPs":
		return eachItem(value, false, func(item string) error {
			a, err := parsePrefix(item, true)
			if err != nil {
				return err
			}
			peer.AllowedIPs = append(peer.AllowedIPs, a)
			return nil
		})
	case "PersistentKeepalive":
		if strings.EqualFold(value, "off") {
			peer.PersistentKeepalive = 0
			return nil
		}
		return parseInt(value, 0, 65535, &peer.PersistentKeepalive)
	}
	return nil
}

// parseKey decodes a WireGuard key: the standard base64 encoding (with padding) of 32 bytes. The
// value is echoed in the error only for a public key. An all-zero key is refused unless zeroOK
// (a preshared key: to wg, all zero means none).
func parseKey(value string, public, zeroOK bool) ([32]byte, error) {
	var k [32]byte
	shown := ""
	if public {
		shown = " " + quote(value)
	}
	// StdEncoding skips '\r' and '\n' while decoding: the length check comes first, and the line
	// reader has already refused control characters.
	if len(value) != base64.StdEncoding.EncodedLen(len(k)) {
		return k, fmt.Errorf("%w%s: want 44 characters of standard base64 encoding 32 bytes", ErrBadKey, shown)
	}
	// Decode wants room for DecodedLen(44) = 33 bytes (44 characters without padding), or panics.
	var buf [33]byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(value))
	if err != nil || n != len(k) {
		return k, fmt.Errorf("%w%s: not the standard base64 encoding of 32 bytes", ErrBadKey, shown)
	}
	copy(k[:], buf[:n])
	if k == [32]byte{} && !zeroOK {
		return k, fmt.Errorf("%w: all zero", ErrBadKey)
	}
	return k, nil
}

// parsePrefix parses an address with or without a prefix length; masked canonicalises it.
func parsePrefix(s string, masked bool) (netip.Prefix, error) {
	full := s
	if !strings.Contains(s, "/") && strings.Contains(s, ":") {
		full += "/128"
	} else if !strings.Contains(s, "/") {
		full += "/32"
	}
	p, err := netip.ParsePrefix(full) // refuses zones
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w %s: not an IP address or prefix", ErrBadValue, quote(s))
	}
	if masked {
		p = p.Masked()
	}
	return p, nil
}

// eachItem calls f with each item of a comma-separated list; with spaces, whitespace separates
// items as well (wg-quick splits Address and DNS on both). Empty items are refused.
func eachItem(value string, spaces bool, f func(string) error) error {
	if value == "" {
		return fmt.Errorf("%w: empty", ErrBadValue)
	}
	for item := range strings.SplitSeq(value, ",") {
		item = trim(item)
		if item == "" {
			return fmt.Errorf("%w: empty list item", ErrBadValue)
		}
		words := []string{item}
		if spaces {
			words = strings.Fields(item)
		}
		for _, w := range words {
			if err := f(w); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseInt parses a decimal number in lo..hi (ASCII digits only, no sign).
func parseInt(value string, lo, hi int, dst *int) error {
	n, ok := 0, value != "" && len(value) <= 6
	for i := 0; ok && i < len(value); i++ {
		ok = value[i] >= '0' && value[i] <= '9'
		n = n*10 + int(value[i]-'0')
	}
	if !ok || n < lo || n > hi {
		return fmt.Errorf("%w %s: want a number %d..%d", ErrBadValue, quote(value), lo, hi)
	}
	*dst = n
	return nil
}

// checkEndpoint checks host:port: a hostname or IPv4 address, or an IPv6 address (no zone) in
// brackets; the port 1..65535.
func checkEndpoint(value string) error {
	bad := func(why string) error { return fmt.Errorf("%w %s: %s", ErrBadValue, quote(value), why) }
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		return bad("want host:port, an IPv6 address in brackets")
	}
	var n int
	if parseInt(port, 1, 65535, &n) != nil {
		return bad("want a port 1..65535")
	}
	if host == "" {
		return bad("empty host")
	}
	if strings.HasPrefix(value, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return bad("want an IPv6 address (without a zone) in brackets")
		}
		return nil
	}
	if strings.Trim(host, "0123456789.") == "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return bad("not an IPv4 address")
		}
		return nil
	}
	if !isHostname(host) {
		return bad("not a host name")
	}
	return nil
}

// isHostname reports whether s is a DNS name: labels of 1..63 letters, digits, '-' and '_', at
// most 253 characters, with an optional final dot.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || !nameChars(label) {
			return false
		}
	}
	return true
}

// isName reports whether s may be a section or key name, and so may be echoed in an error:
// 1..32 letters, digits, '-' and '_'.
func isName(s string) bool { return s != "" && len(s) <= 32 && nameChars(s) }

// nameChars reports whether s is made of ASCII letters, digits, '-' and '_'.
func nameChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// trim removes the spaces and tabs around s.
func trim(s string) string { return strings.Trim(s, " \t") }

// quote renders a (non-secret) value for an error, cut to 64 bytes.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strconv.Quote(s[:i]) + "…"
}

const hidden = "(hidden)"

// String renders the section in wg-quick form, the private key as "(hidden)".
func (i Interface) String() string {
	dns := append(strs(i.DNS), i.DNSSearch...)
	return "[Interface]\n" + kv("PrivateKey", hidden) + kv("Address", strings.Join(strs(i.Addresses), ", ")) +
		kv("DNS", strings.Join(dns, ", ")) + kv("MTU", num(i.MTU)) + kv("ListenPort", num(i.ListenPort))
}

// GoString is String, so that %#v hides the private key too.
func (i Interface) GoString() string { return i.String() }

// LogValue is String, so that log/slog hides the private key too.
func (i Interface) LogValue() slog.Value { return slog.StringValue(i.String()) }

// String renders the section in wg-quick form, the preshared key as "(hidden)".
func (p Peer) String() string {
	psk := ""
	if p.PresharedKey != nil {
		psk = hidden
	}
	return "[Peer]\n" + kv("PublicKey", base64.StdEncoding.EncodeToString(p.PublicKey[:])) + kv("PresharedKey", psk) +
		kv("Endpoint", p.Endpoint) + kv("AllowedIPs", strings.Join(strs(p.AllowedIPs), ", ")) +
		kv("PersistentKeepalive", num(p.PersistentKeepalive))
}

// GoString is String, so that %#v hides the preshared key too.
func (p Peer) GoString() string { return p.String() }

// LogValue is String, so that log/slog hides the preshared key too.
func (p Peer) LogValue() slog.Value { return slog.StringValue(p.String()) }

// String renders the configuration in wg-quick form with the private and preshared keys replaced
// by "(hidden)": it is safe to log, and is not a usable configuration.
func (c *Config) String() string {
	if c == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString(c.Interface.String())
	for _, p := range c.Peers {
		b.WriteString("\n" + p.String())
	}
	return b.String()
}

// GoString is String, so that %#v hides the secret keys too.
func (c *Config) GoString() string { return c.String() }

// LogValue is String, so that log/slog hides the secret keys too.
func (c *Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// kv renders a "Key = Value" line, or nothing for an empty value.
func kv(key, value string) string {
	if value == "" {
		return ""
	}
	return key + " = " + value + "\n"
}

// num renders n, or "" for 0 (unset).
func num(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func strs[T fmt.Stringer](xs []T) []string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return s
}
