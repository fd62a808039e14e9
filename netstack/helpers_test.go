package netstack

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	clientAddr  = netip.MustParseAddr("10.99.0.1")
	exitAddr    = netip.MustParseAddr("10.99.0.2")
	clientAddr6 = netip.MustParseAddr("fd99::1")
	exitAddr6   = netip.MustParseAddr("fd99::2")
)

// testTimeout bounds every wait in these tests.
const testTimeout = 20 * time.Second

// wgNode is one wireguard-go device on a Stack with a loopback Bind.
type wgNode struct {
	stack *Stack
	bind  *Bind
	dev   *device.Device
	priv  [32]byte
	pub   [32]byte
}

func testLogger(t testing.TB) *device.Logger {
	return &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(format string, args ...any) { t.Logf("wireguard: "+format, args...) },
	}
}

// newWGNode starts a device on a new Stack; Close runs at cleanup.
func newWGNode(t testing.TB, cfg Config) *wgNode {
	t.Helper()
	return newWGNodeWith(t, cfg, nil)
}

// newWGNodeWith is newWGNode with device options (nil: device.NewDevice, upstream's).
func newWGNodeWith(t testing.TB, cfg Config, opts *device.DeviceOptions) *wgNode {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &wgNode{stack: s, bind: NewBind(netip.MustParseAddr("127.0.0.1"))}
	n.priv, n.pub = testutil.KeyPair(t)
	if opts != nil {
		n.dev = device.NewDeviceWith(s, n.bind, testLogger(t), *opts)
	} else {
		n.dev = device.NewDevice(s, n.bind, testLogger(t))
	}
	t.Cleanup(n.dev.Close)
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(n.priv[:]))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	if n.bind.LocalAddrPort().Port() == 0 {
		t.Fatal("bind has no port after Up")
	}
	return n
}

// addPeer makes other a peer of n, routing allowed through it.
func (n *wgNode) addPeer(t testing.TB, other *wgNode, allowed ...string) {
	t.Helper()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\n", hex.EncodeToString(other.pub[:]), other.bind.LocalAddrPort())
	for _, a := range allowed {
		cfg += "allowed_ip=" + a + "\n"
	}
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

// dial connects from n's stack to dst over network within testTimeout, failing the test if it
// cannot; the caller closes the connection.
func (n *wgNode) dial(t testing.TB, network string, dst netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := n.stack.DialContext(ctx, network, dst)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPair returns a client (routing everything to the exit) and an exit node.
func newPair(t testing.TB, clientCfg, exitCfg Config) (client, exit *wgNode) {
	t.Helper()
	if clientCfg.Addresses == nil {
		clientCfg.Addresses = []netip.Addr{clientAddr, clientAddr6}
	}
	if exitCfg.Addresses == nil {
		exitCfg.Addresses = []netip.Addr{exitAddr, exitAddr6}
	}
	client = newWGNode(t, clientCfg)
	exit = newWGNode(t, exitCfg)
	client.addPeer(t, exit, "0.0.0.0/0", "::/0")
	exit.addPeer(t, client, clientAddr.String()+"/32", clientAddr6.String()+"/128")
	return client, exit
}

// udpRoundTrip sends msg on c and expects want back. UDP may drop, so it resends up to 5 times,
// each with a 2 s read deadline; a reply that differs fails the test. It reports whether one came.
func udpRoundTrip(t testing.TB, c net.Conn, buf, msg, want []byte, what string) bool {
	t.Helper()
	for try := 0; try < 5; try++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("%s: got %d bytes, want %d", what, n, len(want))
		}
		return true
	}
	return false
}
