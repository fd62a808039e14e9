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

// EgressPolicy decides which destinations an exit may dial. The zero value refuses loopback,
// private, link-local, CGNAT, multicast/broadcast and unspecified destinations and allows the rest.
// It is checked on the address actually dialed, after name resolution.
type EgressPolicy struct {
	AllowLoopback  bool
	AllowPrivate   bool           // 10/8, 172.16/12, 192.168/16, fc00::/7
	AllowLinkLocal bool           // 169.254/16, fe80::/10
	AllowCGNAT     bool           // 100.64/10
	AllowMulticast bool           // 224/4, ff00::/8, 255.255.255.255
	Allow          []netip.Prefix // allowed even when a category above refuses them
	Deny           []netip.Prefix // refused always; checked first
}

var (
	privateRanges = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fc00::/7"),
	}
	cgnatRange     = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork    = netip.MustParsePrefix("0.0.0.0/8")
	broadcastRange = netip.MustParsePrefix("255.255.255.255/32")
)

// Check returns nil if addr may be dialed, or an error wrapping ErrEgressDenied that names the range.
func (p *EgressPolicy) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrEgressDenied)
	}
	for _, pf := range p.Deny {
		if pf.Contains(addr) {
			return fmt.Errorf("%w: %s is in denied range %s", ErrEgressDenied, addr, pf)
		}
	}
	for _, pf := range p.Allow {
		if pf.Contains(addr) {
			return nil
		}
	}
	deny := func(name string) error { return fmt.Errorf("%w: %s is %s", ErrEgressDenied, addr, name) }
	switch {
	case addr.IsUnspecified() || thisNetwork.Contains(addr):
		return deny("unspecified")
	case addr.IsLoopback():
		if !p.AllowLoopback {
			return deny("loopback")
		}
	case addr.IsLinkLocalUnicast():
		if !p.AllowLinkLocal {
			return deny("link-local")
		}
	case addr.IsMulticast() || broadcastRange.Contains(addr):
		if !p.AllowMulticast {
			return deny("multicast or broadcast")
		}
	case cgnatRange.Contains(addr):
		if !p.AllowCGNAT {
			return deny("CGNAT")
		}
	case isPrivate(addr):
		if !p.AllowPrivate {
			return deny("private")
		}
	}
	return nil
}

func isPrivate(a netip.Addr) bool {
	for _, pf := range privateRanges {
		if pf.Contains(a) {
			return true
		}
	}
	return false
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
