package actors

// WireGuard exits: a standard WireGuard server (a VPN provider's wg-quick file, a home router, a
// plain `wg` server) used as a tunnel's exit, with no signaling (docs/wireguard.md). A leg to one
// does not negotiate: it resolves the server's endpoint (afresh on every leg, for DynDNS), brings
// up a device with the configured key, and is up once the server has answered a handshake and the
// configured check passed. Proxied connections are dialled straight through the leg's netstack
// (netstack.DirectDialer): names resolve through the configuration's DNS servers inside the
// tunnel. Health probes are forced handshakes (and the check): there is no echo service to ping.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// WireGuardPrefix starts the id of every WireGuard exit ("wg:" + its name). Warren exit ids cannot
// contain ':', so the two never collide.
const WireGuardPrefix = "wg:"

// IsWireGuardExit reports whether id names a WireGuard exit.
func IsWireGuardExit(id string) bool { return strings.HasPrefix(id, WireGuardPrefix) }

// wgIdleProbeGap: an idle leg to a WireGuard exit is probed (a forced handshake) at most this
// often, unless it is a suspect or sent data that nothing answered. WireGuard itself starts at most
// one handshake per RekeyTimeout (5 s); a handshake every check interval on every idle tunnel
// would load the server for nothing.
const wgIdleProbeGap = 5 * time.Second

// WireGuardExit is a standard WireGuard server as an exit. It is immutable once built (the engine
// builds it from a wg-quick file or inline fields); tunnels share it.
type WireGuardExit struct {
	ID           string         // WireGuardPrefix + name
	PrivateKey   signaling.Key  // [Interface] PrivateKey: the client's key, the same on every leg
	Addresses    []netip.Addr   // [Interface] Address: the client's tunnel addresses
	DNS          []netip.Addr   // [Interface] DNS: resolvers reached through the tunnel
	MTU          int            // [Interface] MTU
	PublicKey    signaling.Key  // [Peer] PublicKey: the server's
	PresharedKey *signaling.Key // [Peer] PresharedKey; nil: none
	Endpoint     string         // [Peer] Endpoint, host:port; a name resolves on every leg
	AllowedIPs   []netip.Prefix // [Peer] AllowedIPs: destinations the server takes
	Keepalive    int            // [Peer] PersistentKeepalive, seconds; 0: the tunnel's keepalive
	Check        WireGuardCheck
}

// Equal reports whether w and o configure the same exit the same way (both nil counts as equal).
func (w *WireGuardExit) Equal(o *WireGuardExit) bool {
	return w == o || (w != nil && o != nil && reflect.DeepEqual(*w, *o))
}

// WireGuardCheck is what proves a WireGuard exit forwards, besides its handshake: at most one of
// TCP (a host:port connected to through the tunnel) and HTTP (a URL fetched through it; any status
// below 500 passes). Both empty: the handshake alone.
type WireGuardCheck struct {
	TCP  string
	HTTP string
}

func (c WireGuardCheck) String() string {
	switch {
	case c.TCP != "":
		return "tcp " + c.TCP
	case c.HTTP != "":
		if u, err := url.Parse(c.HTTP); err == nil {
			return "http " + u.Redacted() // no password in errors and logs
		}
		return "http (unparsable URL)"
	}
	return "handshake"
}

// String names the exit without its secrets (value receivers: a WireGuardExit printed by value
// or by pointer, with any verb, shows no key).
func (w WireGuardExit) String() string {
	return fmt.Sprintf("%s (server %s at %s)", w.ID, w.PublicKey, w.Endpoint)
}

// GoString is String, for %#v.
func (w WireGuardExit) GoString() string { return w.String() }

// LogValue keeps the keys out of logs.
func (w WireGuardExit) LogValue() slog.Value { return slog.StringValue(w.String()) }

// identity is what stands for the exit's identity in the health hub's groups and the status: the
// server's public key.
func (w *WireGuardExit) identity() string { return "wireguard:" + w.PublicKey.String() }

// dialer dials through stack as this exit's configuration says.
func (w *WireGuardExit) dialer(stack *netstack.Stack) netstack.DirectDialer {
	return netstack.DirectDialer{Stack: stack, DNS: w.DNS, Allowed: w.AllowedIPs}
}

// resolveEndpoint resolves the server's endpoint with the host's resolver (the endpoint is outside
// the tunnel); an IP literal is taken as it is. The first address the resolver gives is used — of
// bind's family when bind is set (the tunnel's udp_bind: a socket of one family reaches only it).
func resolveEndpoint(ctx context.Context, endpoint string, bind netip.Addr) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(endpoint); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, err := SplitTarget(endpoint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint: %w", err)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve endpoint %q: %w", host, err)
	}
	for _, a := range addrs {
		if a = a.Unmap(); !bind.IsValid() || a.Is4() == bind.Is4() {
			return netip.AddrPortFrom(a, port), nil
		}
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve endpoint %q: no address", host)
	}
	return netip.AddrPort{}, fmt.Errorf("resolve endpoint %q: no address of udp_bind %s's family", host, bind)
}

// wgProbe proves the server answers now: it forces a handshake and waits for one completed after
// the probe began (a handshake's age is what it proves), then runs the check, if any. It is the
// first probe of a leg and every health probe after it.
//
// A server drops an initiation that follows another too closely (Device.InitiateHandshakes), so
// an unanswered one younger than a resend period (the probe's timeout, at most wgResend) is
// awaited rather than replaced (adding the peer sends one, right before a first probe), and a new
// one goes out no sooner than 50 ms after the last. A probe longer than wgResend (a first probe,
// bounded by the leg's setup) sends a new initiation after each wgResend without an answer, rather
// than wait for WireGuard's retry after RekeyTimeout (5 s): the one it waited for may have been
// dropped (one from a leg closed just before, with the same key, came within 20 ms of it).
//
// handshakeLimit, if not zero, bounds the handshake part alone (a health probe's probe_timeout),
// so that a server that does not answer is judged as fast with a check as without; the check then
// has the rest of ctx.
func wgProbe(dev *device.Device, d netstack.DirectDialer, check WireGuardCheck, handshakeLimit time.Duration) func(context.Context) error {
	return func(pctx context.Context) error {
		ctx := pctx
		if handshakeLimit > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(pctx, handshakeLimit)
			defer cancel()
		}
		start := time.Now()
		period := wgResend
		if dl, ok := ctx.Deadline(); ok {
			period = min(period, dl.Sub(start))
		}
		for {
			dev.InitiateHandshakes(ctx, period)
			wait, cancel := context.WithTimeout(ctx, period)
			err := dev.AwaitHandshake(wait, start)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("no handshake with the WireGuard server: %w", ctx.Err())
			}
		}
		return runCheck(pctx, d, check)
	}
}

// wgResend is how long a probe waits for an answer to an initiation before it sends another.
const wgResend = time.Second

// ErrCheckFailed: a WireGuard exit answered its handshake, but its check (check.tcp, check.http)
// failed: the server holds the key and does not forward.
var ErrCheckFailed = errors.New("exit check failed")

// runCheck runs a WireGuard exit's check through d; a failure wraps ErrCheckFailed.
func runCheck(ctx context.Context, d netstack.DirectDialer, check WireGuardCheck) error {
	var err error
	switch {
	case check.TCP != "":
		var host string
		var port uint16
		if host, port, err = SplitTarget(check.TCP); err == nil {
			var c net.Conn
			if c, err = d.DialTCP(ctx, host, port); err == nil {
				_ = c.Close()
			}
		}
	case check.HTTP != "":
		err = httpCheck(ctx, d, check.HTTP)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCheckFailed, check, err)
	}
	return nil
}

// httpCheck fetches u through d; a status below 500 passes. At most 4 KiB of the body is read;
// the connection is not kept.
func httpCheck(ctx context.Context, d netstack.DirectDialer, u string) error {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := SplitTarget(addr)
			if err != nil {
				return nil, err
			}
			return d.DialTCP(ctx, host, port)
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// CheckWireGuardURL validates an HTTP check's URL (for the engine's config check).
func CheckWireGuardURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

// SplitTarget splits a host:port (a name, an IPv4 address or a bracketed IPv6 one; a port
// 1-65535): an endpoint, a check's target, an HTTP check's dial address.
func SplitTarget(s string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("%q: want host:port", s)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: want a port 1-65535", s)
	}
	return host, uint16(port), nil
}

// connDialer is how a connection reaches its destination through its leg: the connect protocol to
// a Warren exit (netstack.Dialer), or straight through the stack to a WireGuard exit
// (netstack.DirectDialer).
type connDialer interface {
	DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error)
	AssociateUDP(ctx context.Context) (*netstack.UDPAssociation, error)
}

var (
	_ connDialer = netstack.Dialer{}
	_ connDialer = netstack.DirectDialer{}
)
