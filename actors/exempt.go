package actors

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// TargetPattern matches connection targets (host:port) for exemptions from the inactivity timeout.
// Host is "*", "*.suffix" (any subdomain), a name, an IP address or a CIDR; Port is "*" or a number.
type TargetPattern struct {
	host   string
	prefix netip.Prefix
	port   int // -1: any
}

// ParseTargetPattern reads "host:port" ("example.com:443", "*.svc.local:*", "10.0.0.0/8:22", "[::1]:*", "*:5222").
func ParseTargetPattern(s string) (TargetPattern, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return TargetPattern{}, fmt.Errorf("pattern %q: want host:port: %w", s, err)
	}
	p := TargetPattern{host: strings.ToLower(host), port: -1}
	if port != "*" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return TargetPattern{}, fmt.Errorf("pattern %q: port must be * or 1-65535", s)
		}
		p.port = int(n)
	}
	if pf, err := netip.ParsePrefix(host); err == nil {
		p.prefix, p.host = pf.Masked(), ""
	} else if a, err := netip.ParseAddr(host); err == nil {
		p.prefix, p.host = netip.PrefixFrom(a, a.BitLen()), ""
	} else if host == "" || strings.Contains(host[1:], "*") || (strings.HasPrefix(host, "*") && host != "*" && !strings.HasPrefix(host, "*.")) {
		return TargetPattern{}, fmt.Errorf("pattern %q: host must be *, *.suffix, a name, an address or a CIDR", s)
	}
	return p, nil
}

// Match reports whether target (host:port) matches.
func (p TargetPattern) Match(target string) bool {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	if p.port >= 0 && port != strconv.Itoa(p.port) {
		return false
	}
	if p.prefix.IsValid() {
		a, err := netip.ParseAddr(host)
		return err == nil && p.prefix.Contains(a.Unmap())
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case p.host == "*":
		return true
	case strings.HasPrefix(p.host, "*."):
		return strings.HasSuffix(host, p.host[1:])
	}
	return host == p.host
}

// MatchAny returns a matcher for a list of patterns (nil for none).
func MatchAny(patterns []TargetPattern) func(string) bool {
	if len(patterns) == 0 {
		return nil
	}
	return func(target string) bool {
		for _, p := range patterns {
			if p.Match(target) {
				return true
			}
		}
		return false
	}
}
