package testutil

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// wgWait bounds every wait in these tests.
const wgWait = 10 * time.Second

// stockClient is a standard WireGuard client with no Warren code: upstream wireguard-go with its
// default bind on upstream tun/netstack, set up from a wg-quick file as wg-quick would.
type stockClient struct {
	dev  *device.Device
	tnet *netstack.Net
	peer string // the [Peer] part of the IPC configuration
}

// startStockClient starts a client from the wg-quick file conf; a valid endpoint replaces the
// file's (a relay's address, say). It is closed at the test's cleanup.
func startStockClient(t *testing.T, conf string, endpoint netip.AddrPort) *stockClient {
	t.Helper()
	q := parseQuick(t, conf)
	if endpoint.IsValid() {
		q.endpoint = endpoint.String()
	}
	tdev, tnet, err := netstack.CreateNetTUN(q.addrs, q.dns, q.mtu)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{Verbosef: device.DiscardLogf, Errorf: t.Logf})
	t.Cleanup(dev.Close)
	c := &stockClient{dev: dev, tnet: tnet}
	c.peer = fmt.Sprintf("public_key=%s\nendpoint=%s\n", q.peerKey, q.endpoint)
	for _, p := range q.allowed {
		c.peer += "allowed_ip=" + p + "\n"
	}
	if q.keepalive != "" {
		c.peer += "persistent_keepalive_interval=" + q.keepalive + "\n"
	}
	if err := dev.IpcSet("private_key=" + q.privKey + "\nlisten_port=0\n" + c.peer); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	return c
}

// reconnect drops the client's session and sets its peer up anew, as wg-quick down and up would:
// its next packet starts a handshake.
func (c *stockClient) reconnect(t *testing.T) {
	t.Helper()
	if err := c.dev.IpcSet("replace_peers=true\n" + c.peer); err != nil {
		t.Fatal(err)
	}
}

// quick is what a client takes from a wg-quick file (keys in hex, as IPC wants them).
type quick struct {
	privKey, peerKey, endpoint, keepalive string
	addrs, dns                            []netip.Addr
	allowed                               []string
	mtu                                   int
}

// parseQuick reads the few keys of a wg-quick file that ClientConfig writes; anything else fails
// the test (this is no general parser).
func parseQuick(t *testing.T, conf string) quick {
	t.Helper()
	q := quick{mtu: 1420}
	key := func(b64 string) string {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) != 32 {
			t.Fatalf("key %q: %v", b64, err)
		}
		return hex.EncodeToString(b)
	}
	section := ""
	for line := range strings.Lines(conf) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("wg-quick line %q", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch section + k {
		case "[Interface]PrivateKey":
			q.privKey = key(v)
		case "[Interface]Address":
			var p netip.Prefix
			p, err = netip.ParsePrefix(v)
			q.addrs = append(q.addrs, p.Addr())
		case "[Interface]DNS":
			var a netip.Addr
			a, err = netip.ParseAddr(v)
			q.dns = append(q.dns, a)
		case "[Interface]MTU":
			q.mtu, err = strconv.Atoi(v)
		case "[Peer]PublicKey":
			q.peerKey = key(v)
		case "[Peer]Endpoint":
			q.endpoint = v
		case "[Peer]AllowedIPs":
			for p := range strings.SplitSeq(v, ",") {
				q.allowed = append(q.allowed, strings.TrimSpace(p))
			}
		case "[Peer]PersistentKeepalive":
			q.keepalive = v
		default:
			t.Fatalf("unexpected wg-quick line %q in %s", line, section)
		}
		if err != nil {
			t.Fatalf("wg-quick line %q: %v", line, err)
		}
	}
	return q
}

// udpEcho sends 10 datagrams to dst through the client and expects each back (UDP may drop: each
// gets 5 tries of 2 s); the error names the first that was not echoed.
func udpEcho(tnet *netstack.Net, dst netip.AddrPort) error {
	uc, err := tnet.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		return err
	}
	defer uc.Close()
	buf := make([]byte, 2048)
	for i := range 10 {
		msg := PayloadBytes(uint64(i), 16+i*100)
		if !echoedWithin(uc, buf, msg, 5, 2*time.Second) {
			return fmt.Errorf("datagram %d (%d bytes) not echoed", i, len(msg))
		}
	}
	return nil
}

// echoedWithin sends msg up to tries times and reports whether it came back within per each time.
func echoedWithin(c net.Conn, buf, msg []byte, tries int, per time.Duration) bool {
	for range tries {
		if _, err := c.Write(msg); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(per))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == string(msg) {
			return true
		}
	}
	return false
}

// tcpRoundTrip sends n bytes of Payload(seed) to dst through the client, half-closes, and checks
// that exactly those bytes come back before EOF (dst forwards to an echo origin).
func tcpRoundTrip(tnet *netstack.Net, dst netip.AddrPort, seed uint64, n int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), wgWait)
	defer cancel()
	c, err := tnet.DialContextTCPAddrPort(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * wgWait))
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, Payload(seed, n))
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	err = CheckPayload(c, seed, n)
	if serr := <-sent; serr != nil {
		return fmt.Errorf("send: %w", serr)
	}
	return err
}

// TestWGServer runs the server's parts against a stock client and checks that closing everything
// leaves no goroutine behind.
func TestWGServer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("forward", testWGServerForward)
	t.Run("relay", testWGServerRelay)
}

// testWGServerForward: the client's file is as documented; 8 MiB go to a TCP echo origin and come
// back (sha256 compared, the half-close passed on both ways); UDP is echoed; DNS answers A
// queries, NXDOMAIN otherwise, also through the client's resolver that the file's DNS line sets; a
// port not forwarded is refused; Close releases the UDP port and may be called again.
func testWGServerForward(t *testing.T) {
	echo, uecho := EchoServer(t), UDPEchoServer(t)
	named := netip.MustParseAddr("192.0.2.7")
	s := StartWGServer(t, WGServerConfig{
		Forward:    map[uint16]string{80: echo.Addr()},
		ForwardUDP: map[uint16]string{7: uecho.String()},
		DNS:        map[string][]netip.Addr{"origin.test": {named}},
		Keepalive:  25,
	})
	if s.PublicKey() != publicKey(t, s.PrivateKey()) || s.ClientKey() == s.PrivateKey() {
		t.Fatal("keys do not match")
	}
	b64 := base64.StdEncoding.EncodeToString
	ck, sk := s.ClientKey(), s.PublicKey()
	want := "[Interface]\nPrivateKey = " + b64(ck[:]) + "\nAddress = 10.99.0.2/32\nDNS = 10.99.0.1\nMTU = 1420\n\n" +
		"[Peer]\nPublicKey = " + b64(sk[:]) + "\nEndpoint = " + s.Endpoint().String() +
		"\nAllowedIPs = 10.99.0.1/32\nPersistentKeepalive = 25\n"
	if got := s.ClientConfig(); got != want {
		t.Fatalf("ClientConfig:\n%s\nwant:\n%s", got, want)
	}
	file, err := os.ReadFile(s.WriteClientConfig(t))
	if err != nil || string(file) != want {
		t.Fatalf("WriteClientConfig wrote %q, %v", file, err)
	}
	c := startStockClient(t, string(file), netip.AddrPort{})
	addr := s.Address()

	if err := tcpRoundTrip(c.tnet, netip.AddrPortFrom(addr, 80), 1, 8<<20); err != nil {
		t.Fatalf("8 MiB through the forwarded TCP port: %v", err)
	}
	if got := s.Received(); got < 8<<20 {
		t.Fatalf("Received %d, want ≥ 8 MiB", got)
	}
	if err := udpEcho(c.tnet, netip.AddrPortFrom(addr, 7)); err != nil {
		t.Fatalf("UDP through the forwarded port: %v", err)
	}

	dc, err := c.tnet.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(addr, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	buf := make([]byte, 1500)
	for i, q := range []struct {
		name  string
		want  []netip.Addr
		rcode dnsmessage.RCode
	}{{"Origin.Test", []netip.Addr{named}, dnsmessage.RCodeSuccess}, {"none.test", nil, dnsmessage.RCodeNameError}} {
		query := DNSQuery(uint16(100+i), q.name, dnsmessage.TypeA)
		n, ok := answeredWithin(dc, buf, query)
		if !ok {
			t.Fatalf("no DNS answer for %s", q.name)
		}
		id, got, rcode, err := ParseDNSAnswer(buf[:n])
		if err != nil || id != uint16(100+i) || rcode != q.rcode || !slices.Equal(got, q.want) {
			t.Fatalf("%s: id %d, %v, %v, %v; want %v, %v", q.name, id, got, rcode, err, q.want, q.rcode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wgWait)
	defer cancel()
	if got, err := c.tnet.LookupContextHost(ctx, "origin.test"); err != nil || !slices.Equal(got, []string{named.String()}) {
		t.Fatalf("the client's resolver: %v, %v", got, err)
	}

	if tc, err := c.tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addr, 81)); err == nil {
		tc.Close()
		t.Fatal("a port that is not forwarded accepted a connection")
	}

	ep := s.Endpoint()
	s.Close()
	s.Close()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ep))
	if err != nil {
		t.Fatalf("the server's UDP port after Close: %v", err)
	}
	pc.Close()
}

// answeredWithin sends query on c and reads the answer into buf, returning its length (3 tries
// of 2 s).
func answeredWithin(c net.Conn, buf, query []byte) (int, bool) {
	for range 3 {
		if _, err := c.Write(query); err != nil {
			return 0, false
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			return n, true
		}
	}
	return 0, false
}

// testWGServerRelay: a client reaches the server through a relay. With the relay blackholed no
// datagram gets through and the server receives nothing; restored, traffic passes again. The
// server is then restarted with the same keys (its config from PrivateKey and ClientKey) on
// another port, the relay pointed at it, and the client, reconnecting, works through it again.
func testWGServerRelay(t *testing.T) {
	echo, uecho := EchoServer(t), UDPEchoServer(t)
	cfg := WGServerConfig{Forward: map[uint16]string{80: echo.Addr()}, ForwardUDP: map[uint16]string{7: uecho.String()}}
	s1 := StartWGServer(t, cfg)
	relay := StartUDPRelay(t, s1.Endpoint())
	c := startStockClient(t, s1.ClientConfig(), relay.Addr())
	tcpDst, udpDst := netip.AddrPortFrom(s1.Address(), 80), netip.AddrPortFrom(s1.Address(), 7)
	if err := udpEcho(c.tnet, udpDst); err != nil {
		t.Fatalf("through the relay: %v", err)
	}

	relay.SetBlackhole(true)
	// Toward the server only: a reply the relay read from it before the blackhole may still go out.
	toward := func() int64 { return relay.Passed.Load() - relay.FromTarget.Load() }
	before, beforeRelayed := s1.Received(), toward()
	uc, err := c.tnet.DialUDPAddrPort(netip.AddrPort{}, udpDst)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	buf := make([]byte, 2048)
	if echoedWithin(uc, buf, []byte("through the hole"), 3, 300*time.Millisecond) {
		t.Fatal("a datagram was echoed through the blackholed relay")
	}
	if got := s1.Received(); got != before || toward() != beforeRelayed {
		t.Fatalf("blackholed: the server received %d bytes more, the relay passed %d datagrams toward it", got-before, toward()-beforeRelayed)
	}
	relay.SetBlackhole(false)
	if !echoedWithin(uc, buf, []byte("through again"), 5, 2*time.Second) {
		t.Fatal("no echo after the blackhole ended")
	}
	if err := tcpRoundTrip(c.tnet, tcpDst, 2, 256<<10); err != nil {
		t.Fatalf("TCP after the blackhole: %v", err)
	}

	pub, priv, ck := s1.PublicKey(), s1.PrivateKey(), s1.ClientKey()
	old := s1.Endpoint()
	s1.Close()
	cfg.PrivateKey, cfg.ClientKey = &priv, &ck
	s2 := StartWGServer(t, cfg)
	if s2.PublicKey() != pub || s2.ClientKey() != ck || s2.Endpoint() == old {
		t.Fatalf("restarted: key %x client key same %v endpoint %v (was %v)", s2.PublicKey(), s2.ClientKey() == ck, s2.Endpoint(), old)
	}
	relay.SetTarget(s2.Endpoint())
	c.reconnect(t)
	if err := udpEcho(c.tnet, udpDst); err != nil {
		t.Fatalf("UDP after the restart: %v", err)
	}
	if err := tcpRoundTrip(c.tnet, tcpDst, 3, 256<<10); err != nil {
		t.Fatalf("TCP after the restart: %v", err)
	}
	if s2.Received() == 0 {
		t.Fatal("the restarted server received nothing")
	}
}
