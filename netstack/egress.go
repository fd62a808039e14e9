package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// ErrEgressDenied: the exit's egress policy refuses the destination.
var ErrEgressDenied = errors.New("destination not allowed by egress policy")

// EgressPolicy decides which destinations an exit may dial. It is checked on the address actually
// dialed, after name resolution, in every form that reaches an IPv4 address: IPv4-mapped IPv6
// (::ffff:a.b.c.d) is the IPv4 address; NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (2001::/32)
// and the deprecated IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d) forms are
// refused when the IPv4 address they embed is refused.
//
// The zero value refuses every special-purpose range (IANA's special-purpose registries) and allows
// the rest: each category below has its switch, and Allow lets single ranges through. Deny is
// checked first and wins over both. The unspecified addresses 0.0.0.0 and :: are always refused:
// the kernel dials this host for them.
type EgressPolicy struct {
	AllowLoopback  bool // 127/8, ::1
	AllowPrivate   bool // 10/8, 172.16/12, 192.168/16; fc00::/7 (unique local), 64:ff9b:1::/48 (local-use NAT64)
	AllowLinkLocal bool // 169.254/16, fe80::/10
	AllowCGNAT     bool // 100.64/10
	AllowMulticast bool // 224/4, ff00::/8, and the broadcast address 255.255.255.255
	// AllowDocumentation: 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
	AllowDocumentation bool
	// AllowBenchmarking: 198.18/15, 2001:2::/48.
	AllowBenchmarking bool
	// AllowReserved: 0/8 but 0.0.0.0 ("this network"), 192.0.0/24 (IETF protocol assignments),
	// 240/4 (future use); IPv6 outside 2000::/3 and the ranges above (IPv4-compatible ::/96,
	// discard-only 100::/64, SRv6 5f00::/16, site-local fec0::/10 …), and 2001::/23 (IETF protocol
	// assignments, Teredo among them) but its globally reachable parts.
	AllowReserved bool
	Allow         []netip.Prefix // allowed even when a category above refuses them
	Deny          []netip.Prefix // refused always; checked first
}

// egressClass is a special-purpose category of addresses.
type egressClass uint8

const (
	classGlobal egressClass = iota
	classUnspecified
	classLoopback
	classPrivate
	classLinkLocal
	classCGNAT
	classMulticast
	classDocumentation
	classBenchmarking
	classReserved
)

var classNames = [...]string{classGlobal: "global", classUnspecified: "unspecified (this host)", classLoopback: "loopback",
	classPrivate: "private", classLinkLocal: "link-local", classCGNAT: "CGNAT", classMulticast: "multicast or broadcast",
	classDocumentation: "documentation", classBenchmarking: "benchmarking", classReserved: "reserved"}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// classRange maps a range to its category; the first match wins, so more specific ranges come first.
type classRange struct {
	p     netip.Prefix
	class egressClass
}

var (
	v4Ranges = []classRange{
		{pfx("127.0.0.0/8"), classLoopback},
		{pfx("0.0.0.0/8"), classReserved},
		{pfx("10.0.0.0/8"), classPrivate},
		{pfx("172.16.0.0/12"), classPrivate},
		{pfx("192.168.0.0/16"), classPrivate},
		{pfx("100.64.0.0/10"), classCGNAT},
		{pfx("169.254.0.0/16"), classLinkLocal},
		{pfx("224.0.0.0/4"), classMulticast},
		{pfx("255.255.255.255/32"), classMulticast},
		{pfx("240.0.0.0/4"), classReserved},
		{pfx("192.0.0.0/24"), classReserved},
		{pfx("192.0.2.0/24"), classDocumentation},
		{pfx("198.51.100.0/24"), classDocumentation},
		{pfx("203.0.113.0/24"), classDocumentation},
		{pfx("198.18.0.0/15"), classBenchmarking},
	}
	v6Ranges = []classRange{
		{pfx("::1/128"), classLoopback},
		{pfx("64:ff9b::/96"), classGlobal}, // NAT64: the embedded IPv4 address decides
		{pfx("64:ff9b:1::/48"), classPrivate},
		{pfx("fc00::/7"), classPrivate},
		{pfx("fe80::/10"), classLinkLocal},
		{pfx("ff00::/8"), classMulticast},
		{pfx("2001:db8::/32"), classDocumentation},
		{pfx("3fff::/20"), classDocumentation},
		{pfx("2001:2::/48"), classBenchmarking},
		// 2001::/23 is reserved but for these globally reachable assignments.
		{pfx("2001:1::1/128"), classGlobal},
		{pfx("2001:1::2/128"), classGlobal},
		{pfx("2001:1::3/128"), classGlobal},
		{pfx("2001:3::/32"), classGlobal},
		{pfx("2001:4:112::/48"), classGlobal},
		{pfx("2001:20::/28"), classGlobal},
		{pfx("2001:30::/28"), classGlobal},
		{pfx("2001::/23"), classReserved},
		{pfx("2000::/3"), classGlobal},
	}
	nat64Prefix  = pfx("64:ff9b::/96")
	sixToFour    = pfx("2002::/16")
	teredo       = pfx("2001::/32")
	v4Compatible = pfx("::/96")
	v4Translated = pfx("::ffff:0:0:0/96")
)

// classify puts a (unmapped, zoneless) address in its category.
func classify(a netip.Addr) egressClass {
	if a.IsUnspecified() {
		return classUnspecified
	}
	ranges := v6Ranges
	if a.Is4() {
		ranges = v4Ranges
	}
	for _, r := range ranges {
		if r.p.Contains(a) {
			return r.class
		}
	}
	if a.Is4() {
		return classGlobal
	}
	return classReserved // IPv6 outside 2000::/3 and the unicast ranges above
}

func (p *EgressPolicy) allows(c egressClass) bool {
	switch c {
	case classGlobal:
		return true
	case classLoopback:
		return p.AllowLoopback
	case classPrivate:
		return p.AllowPrivate
	case classLinkLocal:
		return p.AllowLinkLocal
	case classCGNAT:
		return p.AllowCGNAT
	case classMulticast:
		return p.AllowMulticast
	case classDocumentation:
		return p.AllowDocumentation
	case classBenchmarking:
		return p.AllowBenchmarking
	case classReserved:
		return p.AllowReserved
	}
	return false // unspecified
}

// embedded returns the IPv4 addresses an IPv6 address reaches through a translator or tunnel,
// and the name of the mechanism.
// nat64Local is the local-use NAT64 prefix (RFC 8215).
var nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")

func embedded(a netip.Addr) (v4 [2]netip.Addr, n int, how string) {
	if !a.Is6() {
		return v4, 0, ""
	}
	b := a.As16()
	at := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[i+1], b[i+2], b[i+3]}) }
	switch {
	case nat64Prefix.Contains(a):
		return [2]netip.Addr{at(12)}, 1, "NAT64"
	case nat64Local.Contains(a):
		// Local-use NAT64 (RFC 8215): translators take a /96 inside it, with the IPv4 address in
		// the last 32 bits, as with the well-known prefix.
		return [2]netip.Addr{at(12)}, 1, "NAT64 (local use)"
	case sixToFour.Contains(a):
		return [2]netip.Addr{at(2)}, 1, "6to4"
	case teredo.Contains(a): // server, and the client's address obfuscated (inverted)
		return [2]netip.Addr{at(4), netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})}, 2, "Teredo"
	case v4Translated.Contains(a):
		return [2]netip.Addr{at(12)}, 1, "IPv4-translated"
	case v4Compatible.Contains(a) && a != netip.IPv6Loopback() && !a.IsUnspecified():
		return [2]netip.Addr{at(12)}, 1, "IPv4-compatible"
	}
	return v4, 0, ""
}

// Check returns nil if addr may be dialed, or an error wrapping ErrEgressDenied that names the range.
func (p *EgressPolicy) Check(addr netip.Addr) error {
	addr = addr.WithZone("").Unmap() // a zone would make every prefix miss
	if !addr.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrEgressDenied)
	}
	v4, n, how := embedded(addr)
	all := [3]netip.Addr{addr, v4[0], v4[1]}
	forms := all[:1+n]
	for _, a := range forms {
		if pf, ok := matchAny(p.Deny, a); ok {
			return refusal(addr, a, how, "in denied range "+pf.String())
		}
	}
	for _, a := range forms {
		if _, ok := matchAny(p.Allow, a); ok && !a.IsUnspecified() {
			continue
		}
		if c := classify(a); !p.allows(c) {
			return refusal(addr, a, how, classNames[c])
		}
	}
	return nil
}

func refusal(addr, form netip.Addr, how, why string) error {
	if form != addr {
		return fmt.Errorf("%w: %s (%s, reaching %s): %s is %s", ErrEgressDenied, addr, how, form, form, why)
	}
	return fmt.Errorf("%w: %s is %s", ErrEgressDenied, addr, why)
}

// matchAny reports the first prefix containing a. A prefix written in IPv4-mapped form
// (::ffff:10.0.0.0/104) matches the IPv4 addresses it maps.
func matchAny(ps []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, pf := range ps {
		q := pf
		if pf.Addr().Is4In6() && pf.Bits() >= 96 {
			q = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
		}
		if q.Contains(a) {
			return pf, true
		}
	}
	return netip.Prefix{}, false
}

// Dialer returns a host dialer that checks every address it is about to connect to, so a name that
// resolves to a refused address is refused too (no check-then-dial race with DNS).
func (p *EgressPolicy) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %q: %w", ErrEgressDenied, address, err)
			}
			return p.Check(ap.Addr())
		},
	}
}

// DialEgress dials network/host:port on the host network under the policy.
func (p *EgressPolicy) DialEgress(ctx context.Context, network, host string, port uint16, timeout time.Duration) (net.Conn, error) {
	d := p.Dialer(timeout)
	c, err := d.DialContext(ctx, network, net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return nil, &DialError{Code: ReplyCodeForDial(err), Err: err}
	}
	return c, nil
}

// ReplyCodeForDial maps a host dial error to the reply code a proxy client will see.
func ReplyCodeForDial(err error) messages.ReplyCode {
	var dnsErr *net.DNSError
	var de *DialError
	switch {
	case err == nil:
		return messages.ReplySucceeded
	case errors.As(err, &de):
		return de.Code
	case errors.Is(err, ErrEgressDenied):
		return messages.ReplyNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return messages.ReplyConnectionRefused
	case errors.Is(err, syscall.EHOSTUNREACH):
		return messages.ReplyHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return messages.ReplyNetworkUnreachable
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return messages.ReplyTTLExpired
		}
		return messages.ReplyHostUnreachable
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err):
		return messages.ReplyTTLExpired
	}
	return messages.ReplyGeneralFailure
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// DialError is a refused dial with the reply code that says why.
type DialError struct {
	Code messages.ReplyCode
	Err  error // the cause, when known locally; nil when the code came over the tunnel
}

func (e *DialError) Error() string {
	name := messages.ReplyCodeNames[e.Code]
	if name == "" {
		name = fmt.Sprintf("reply code %d", e.Code)
	}
	if e.Err != nil {
		return name + ": " + e.Err.Error()
	}
	return name
}

func (e *DialError) Unwrap() error { return e.Err }

// ReplyCode lets the proxy answer with the matching SOCKS5 reply or HTTP status.
func (e *DialError) ReplyCode() messages.ReplyCode { return e.Code }
