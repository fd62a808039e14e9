package netstack

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/device"
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

func newKeyPair(t testing.TB) (priv, pub [32]byte) {
	t.Helper()
	if _, err := rand.Read(priv[:]); err != nil {
		t.Fatal(err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(pub[:], p)
	return priv, pub
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
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &wgNode{stack: s, bind: NewBind(netip.MustParseAddr("127.0.0.1"))}
	n.priv, n.pub = newKeyPair(t)
	n.dev = device.NewDevice(s, n.bind, testLogger(t))
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

// patternReader yields n deterministic pseudo-random bytes.
func patternReader(seed uint64, n int64) io.Reader {
	return io.LimitReader(&chachaReader{r: mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})}, n)
}

type chachaReader struct{ r *mrand.ChaCha8 }

func (c *chachaReader) Read(p []byte) (int, error) { return c.r.Read(p) }

func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	if _, err := io.Copy(h, patternReader(seed, n)); err != nil {
		panic(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// waitFor receives from ch or fails the test after testTimeout.
func waitFor[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// recv receives from ch within testTimeout; usable off the test goroutine.
func recv[T any](ch <-chan T) (T, bool) {
	select {
	case v := <-ch:
		return v, true
	case <-time.After(testTimeout):
		var zero T
		return zero, false
	}
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
