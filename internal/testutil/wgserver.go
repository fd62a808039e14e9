package testutil

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// WGServer is a plain WireGuard server (upstream wireguard-go on its own netstack) whose tunnel
// address forwards chosen ports to loopback origins, like a small VPN server. It has one peer, the
// client whose wg-quick file ClientConfig writes, and holds no Warren code: a Warren tunnel can
// use it as any standard WireGuard server.
//
// Inside the tunnel the server is its Address alone: TCP and UDP to a forwarded port of it reach
// that port's origin, a DNS query to its port 53 is answered from WGServerConfig.DNS; anything else
// is refused (TCP) or dropped.
type WGServer struct {
	cfg        WGServerConfig
	priv, pub  [32]byte
	clientPriv [32]byte
	dev        *device.Device
	tun        *wgTun // closed by the device's Close
	endpoint   netip.AddrPort
	logf       func(string, ...any)

	ctx    context.Context // cancelled by Close: ends origin dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the server's own
	mu     sync.Mutex     // guards closed and open
	closed bool
	open   map[io.Closer]struct{} // listeners, connections and sockets Close closes
	once   sync.Once
}

// WGServerConfig configures StartWGServer. The zero value is a server with no forwarded ports.
type WGServerConfig struct {
	Address netip.Addr // the server's tunnel address, default 10.99.0.1
	Peer    netip.Addr // the one client's tunnel address, default 10.99.0.2
	// Forward maps a tunnel port to a TCP origin ("127.0.0.1:port"): each connection to
	// Address:port inside the tunnel is piped to a new connection to the origin, both ways, a
	// half-close passed on as a half-close.
	Forward map[uint16]string
	// ForwardUDP maps a tunnel port to a UDP origin: the datagrams of each client source address
	// and port go out of a host UDP socket of their own, and what comes back to that socket goes
	// back to that source.
	ForwardUDP map[uint16]string
	// DNS, if not nil, is served on Address:53 inside the tunnel (UDP), as DNSServer serves it:
	// A and AAAA from these records, NXDOMAIN for a name it does not have. ClientConfig then names
	// Address as the client's DNS server.
	DNS        map[string][]netip.Addr
	PrivateKey *[32]byte // the server's key; nil: generated (set it to restart a server with its key)
	ClientKey  *[32]byte // the client's private key; nil: generated
	ListenAddr string    // UDP address WireGuard listens on, default "127.0.0.1:0"
	Keepalive  int       // PersistentKeepalive in the client's file, seconds (0: none)
}

// WGServerMTU is the MTU of the server's tunnel interface and of the client's file.
const WGServerMTU = 1420

// Bounds of the forwarders: one copy buffer per direction of a TCP connection, at most
// maxUDPSources host sockets per forwarded UDP port (datagrams of further sources are dropped).
const (
	tcpCopyBuffer = 32 << 10
	maxUDPSources = 64
	originDial    = 5 * time.Second
)

// StartWGServer starts a WireGuard server as cfg says; it is closed at the test's cleanup. Setup
// errors fail the test; later ones (an origin that refuses, say) end the one flow concerned.
func StartWGServer(t testing.TB, cfg WGServerConfig) *WGServer {
	t.Helper()
	if !cfg.Address.IsValid() {
		cfg.Address = netip.MustParseAddr("10.99.0.1")
	}
	if !cfg.Peer.IsValid() {
		cfg.Peer = netip.MustParseAddr("10.99.0.2")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	listen, err := netip.ParseAddrPort(cfg.ListenAddr)
	if err != nil {
		t.Fatalf("wgserver: ListenAddr: %v", err)
	}
	s := &WGServer{cfg: cfg, open: map[io.Closer]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.logf = func(format string, args ...any) { t.Logf("wgserver: "+format, args...) }
	if cfg.PrivateKey != nil {
		s.priv = *cfg.PrivateKey
	} else {
		s.priv, _ = KeyPair(t)
	}
	if cfg.ClientKey != nil {
		s.clientPriv = *cfg.ClientKey
	} else {
		s.clientPriv, _ = KeyPair(t)
	}
	s.pub = publicKey(t, s.priv)
	clientPub := publicKey(t, s.clientPriv)
	t.Cleanup(s.Close)

	tdev, err := newWGTun(cfg.Address, WGServerMTU)
	if err != nil {
		t.Fatalf("wgserver: netstack: %v", err)
	}
	s.tun = tdev
	bind := &udpBind{addr: listen}
	s.dev = device.NewDevice(tdev, bind, &device.Logger{Verbosef: device.DiscardLogf, Errorf: s.logf})
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nallowed_ip=%s\n", hex.EncodeToString(s.priv[:]),
		hex.EncodeToString(clientPub[:]), netip.PrefixFrom(cfg.Peer, cfg.Peer.BitLen()))
	if err := s.dev.IpcSet(uapi); err != nil {
		t.Fatalf("wgserver: IpcSet: %v", err)
	}
	if err := s.dev.Up(); err != nil {
		t.Fatalf("wgserver: Up: %v", err)
	}
	s.endpoint = bind.local()
	if !s.endpoint.IsValid() {
		t.Fatal("wgserver: the UDP socket did not open")
	}
	if s.endpoint.Addr().IsUnspecified() { // dialable: the loopback of its family
		lo := netip.MustParseAddr("127.0.0.1")
		if listen.Addr().Is6() {
			lo = netip.IPv6Loopback()
		}
		s.endpoint = netip.AddrPortFrom(lo, s.endpoint.Port())
	}

	for port, origin := range cfg.Forward {
		if _, err := net.ResolveTCPAddr("tcp", origin); err != nil {
			t.Fatalf("wgserver: TCP origin of port %d: %v", port, err)
		}
		fa, proto := fullAddr(netip.AddrPortFrom(cfg.Address, port))
		ln, err := gonet.ListenTCP(tdev.stack, fa, proto)
		if err != nil {
			t.Fatalf("wgserver: listen on TCP port %d: %v", port, err)
		}
		s.goTracked(ln, func() { s.serveTCP(ln, origin) })
	}
	for port, origin := range cfg.ForwardUDP {
		to, err := net.ResolveUDPAddr("udp", origin)
		if err != nil {
			t.Fatalf("wgserver: UDP origin of port %d: %v", port, err)
		}
		fa, proto := fullAddr(netip.AddrPortFrom(cfg.Address, port))
		pc, err := gonet.DialUDP(tdev.stack, &fa, nil, proto)
		if err != nil {
			t.Fatalf("wgserver: listen on UDP port %d: %v", port, err)
		}
		s.goTracked(pc, func() { s.serveUDP(pc, to) })
	}
	if cfg.DNS != nil {
		fa, proto := fullAddr(netip.AddrPortFrom(cfg.Address, 53))
		pc, err := gonet.DialUDP(tdev.stack, &fa, nil, proto)
		if err != nil {
			t.Fatalf("wgserver: listen on UDP port 53: %v", err)
		}
		s.goTracked(pc, func() { ServeDNS(pc, cfg.DNS) })
	}
	return s
}

// publicKey is the X25519 public key of priv.
func publicKey(t testing.TB, priv [32]byte) (pub [32]byte) {
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatalf("wgserver: public key: %v", err)
	}
	copy(pub[:], p)
	return pub
}

// Endpoint is the UDP address clients send to.
func (s *WGServer) Endpoint() netip.AddrPort { return s.endpoint }

// PublicKey is the server's public key, the [Peer] PublicKey of the client's file.
func (s *WGServer) PublicKey() [32]byte { return s.pub }

// PrivateKey is the server's private key: WGServerConfig.PrivateKey for a restart with the same
// key.
func (s *WGServer) PrivateKey() [32]byte { return s.priv }

// ClientKey is the client's private key (WGServerConfig.ClientKey keeps it across a restart).
func (s *WGServer) ClientKey() [32]byte { return s.clientPriv }

// Address is the server's tunnel address; Peer is the client's.
func (s *WGServer) Address() netip.Addr { return s.cfg.Address }

// Peer is the client's tunnel address.
func (s *WGServer) Peer() netip.Addr { return s.cfg.Peer }

// ClientConfig is a wg-quick file for the client: its key, its address, the server as DNS server
// (when the server serves DNS) and the MTU; the server as its one peer, at Endpoint, allowed only
// the server's own address (the server forwards nothing else), with PersistentKeepalive if set.
func (s *WGServer) ClientConfig() string {
	var b strings.Builder
	b64 := base64.StdEncoding.EncodeToString
	clientPrefix := netip.PrefixFrom(s.cfg.Peer, s.cfg.Peer.BitLen())
	serverPrefix := netip.PrefixFrom(s.cfg.Address, s.cfg.Address.BitLen())
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = %s\n", b64(s.clientPriv[:]), clientPrefix)
	if s.cfg.DNS != nil {
		fmt.Fprintf(&b, "DNS = %s\n", s.cfg.Address)
	}
	fmt.Fprintf(&b, "MTU = %d\n\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s\n",
		WGServerMTU, b64(s.pub[:]), s.endpoint, serverPrefix)
	if s.cfg.Keepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", s.cfg.Keepalive)
	}
	return b.String()
}

// WriteClientConfig writes ClientConfig to a file (mode 0600, as wg-quick wants) in t.TempDir()
// and returns its path.
func (s *WGServer) WriteClientConfig(t testing.TB) string {
	t.Helper()
	return s.WriteClientConfigIn(t, t.TempDir(), "wg0")
}

// WriteClientConfigIn writes ClientConfig to dir/stem.conf (mode 0600) and returns its path: a
// directory of such files is what a pool's wireguard_dir reads.
func (s *WGServer) WriteClientConfigIn(t testing.TB, dir, stem string) string {
	t.Helper()
	path := filepath.Join(dir, stem+".conf")
	if err := os.WriteFile(path, []byte(s.ClientConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Received is how many bytes the server received from the client over WireGuard (rx_bytes of its
// peer in the device's IPC state; 0 before any).
func (s *WGServer) Received() uint64 {
	state, err := s.dev.IpcGet()
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(state))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rx_bytes="); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// Close stops the server: it closes the forwarders' listeners, connections and sockets, waits for
// their goroutines, then closes the device (its UDP port is free when Close returns). It may be
// called more than once.
func (s *WGServer) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.open {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
		if s.dev != nil {
			s.dev.Close() // closes the netstack and the UDP socket, waits for the device's goroutines
		}
	})
}

// track records c for Close and counts its holder (a goroutine, or a pipe's origin connection) in
// s.wg until untrack; false (c untouched) once the server is closing.
func (s *WGServer) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// untrack closes c, forgets it and ends the goroutine that track counted.
func (s *WGServer) untrack(c io.Closer) {
	_ = c.Close()
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	s.wg.Done()
}

// goTracked runs f on a goroutine that owns c: c is closed by Close or when f returns.
func (s *WGServer) goTracked(c io.Closer, f func()) {
	if !s.track(c) {
		_ = c.Close()
		return
	}
	go func() {
		defer s.untrack(c)
		f()
	}()
}

// serveTCP accepts the tunnel's connections to one forwarded port and pipes each to origin.
func (s *WGServer) serveTCP(ln *gonet.TCPListener, origin string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.goTracked(c, func() { s.pipeTCP(c, origin) })
	}
}

// closeWriter is a connection that can half-close (gonet.TCPConn, net.TCPConn).
type closeWriter interface{ CloseWrite() error }

// pipeTCP connects c to origin and copies both ways until both directions have ended; an error
// either way closes both connections.
func (s *WGServer) pipeTCP(c net.Conn, origin string) {
	d := net.Dialer{Timeout: originDial}
	o, err := d.DialContext(s.ctx, "tcp", origin)
	if err != nil {
		return // closing c tells the client
	}
	if !s.track(o) {
		_ = o.Close()
		return
	}
	defer s.untrack(o)
	var abort sync.Once
	kill := func() { abort.Do(func() { _ = c.Close(); _ = o.Close() }) }
	done := make(chan struct{})
	go func() { // origin → client; owned by pipeTCP, which waits for it
		defer close(done)
		copyHalf(c, o, kill)
	}()
	copyHalf(o, c, kill)
	<-done
}

// copyHalf copies src to dst through its own buffer (io.Copy between TCP connections would splice
// through pooled pipes); at src's EOF it half-closes dst, on any error it calls kill.
func copyHalf(dst, src net.Conn, kill func()) {
	buf := make([]byte, tcpCopyBuffer)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				kill()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(closeWriter); !ok || cw.CloseWrite() != nil {
				kill()
			}
			return
		}
		if err != nil {
			kill()
			return
		}
	}
}

// serveUDP forwards the datagrams to one UDP port: each client source gets a host socket
// connected to origin, and what that socket receives goes back to the source. The sockets live
// until Close.
func (s *WGServer) serveUDP(pc *gonet.UDPConn, origin *net.UDPAddr) {
	socks := map[netip.AddrPort]*net.UDPConn{} // this goroutine's own
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		src := from.(*net.UDPAddr).AddrPort()
		hc := socks[src]
		if hc == nil {
			if len(socks) >= maxUDPSources {
				continue
			}
			if hc, err = net.DialUDP("udp", nil, origin); err != nil {
				s.logf("UDP origin %s: %v", origin, err)
				continue
			}
			socks[src] = hc
			s.goTracked(hc, func() { udpReplies(pc, hc, from) })
		}
		_, _ = hc.Write(buf[:n])
	}
}

// udpReplies sends what hc receives to the client source to through pc, until hc is closed.
func udpReplies(pc *gonet.UDPConn, hc *net.UDPConn, to net.Addr) {
	buf := make([]byte, 65535)
	for {
		n, err := hc.Read(buf)
		if n > 0 {
			_, _ = pc.WriteTo(buf[:n], to)
		}
		// A connected UDP socket reports an ICMP port unreachable from the origin as a read
		// error; the socket is still good.
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
	}
}

// udpBind is a conn.Bind on one UDP socket at a given address (conn.NewDefaultBind listens on
// every interface, and on IPv4 and IPv6 both). It receives and sends one datagram at a time.
type udpBind struct {
	addr netip.AddrPort
	mu   sync.Mutex // orders Open and Close
	c    atomic.Pointer[net.UDPConn]
}

var _ conn.Bind = (*udpBind)(nil)

// Open listens on the bind's address, at port if it is not 0 (the device reopens at the port it
// had).
func (b *udpBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	ap := b.addr
	if port != 0 {
		ap = netip.AddrPortFrom(ap.Addr(), port)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, 0, err
	}
	b.c.Store(c)
	recv := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, from, err := c.ReadFromUDPAddrPort(packets[0])
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		eps[0] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		return 1, nil
	}
	return []conn.ReceiveFunc{recv}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

// local is the address the bind listens on (invalid while closed).
func (b *udpBind) local() netip.AddrPort {
	if c := b.c.Load(); c != nil {
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return netip.AddrPort{}
}

// Close closes the socket; its receive function then returns net.ErrClosed.
func (b *udpBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.c.Swap(nil); c != nil {
		return c.Close()
	}
	return nil
}

// SetMark does nothing: no fwmark on a test socket.
func (b *udpBind) SetMark(uint32) error { return nil }

// Send sends bufs to ep, one datagram each.
func (b *udpBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	c := b.c.Load()
	if c == nil {
		return net.ErrClosed
	}
	for _, buf := range bufs {
		if _, err := c.WriteToUDPAddrPort(buf, e.AddrPort); err != nil {
			return err
		}
	}
	return nil
}

// ParseEndpoint parses "ip:port".
func (b *udpBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

// BatchSize is 1: one datagram per read.
func (b *udpBind) BatchSize() int { return 1 }
