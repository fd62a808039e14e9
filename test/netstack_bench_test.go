package test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// nsbChunk is the unit of BenchmarkNetstackBaseline: b.N chunks go through
// one TCP stream.
const nsbChunk = 1 << 20

// nsbNode is one wireguard-go device on a warren netstack with a loopback bind.
type nsbNode struct {
	stack *netstack.Stack
	bind  *netstack.Bind
	dev   *device.Device
	pub   [32]byte
}

func nsbNewNode(b *testing.B, addr netip.Addr) *nsbNode {
	b.Helper()
	s, err := netstack.New(netstack.Config{Addresses: []netip.Addr{addr}, MTU: 1420})
	if err != nil {
		b.Fatal(err)
	}
	n := &nsbNode{stack: s, bind: netstack.NewBind(netip.MustParseAddr("127.0.0.1"))}
	priv, pub := testutil.KeyPair(b)
	n.pub = pub
	n.dev = device.NewDevice(s, n.bind, &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(f string, a ...any) { b.Logf("wireguard: "+f, a...) },
	})
	b.Cleanup(n.dev.Close)
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(priv[:]))); err != nil {
		b.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		b.Fatal(err)
	}
	return n
}

func nsbPeer(b *testing.B, n, other *nsbNode, allowed netip.Addr) {
	b.Helper()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		hex.EncodeToString(other.pub[:]), other.bind.LocalAddrPort(), allowed)
	if err := n.dev.IpcSet(cfg); err != nil {
		b.Fatal(err)
	}
}

// heapInUse is the Go heap in use after two collections (the second frees what the first left to
// finalizers and pools).
func heapInUse() uint64 { return memAfterGC().HeapInuse }

// memAfterGC is the runtime's memory statistics after the same two collections.
func memAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// BenchmarkNetstackBaseline is a bulk TCP transfer between two bare
// wireguard-go devices on warren netstacks (MTU 1420, loopback UDP): b.N MiB
// in one stream, acknowledged by the receiver's byte count after EOF.
// heap-MiB/dev is the live heap per device after the transfer (after GC);
// heapEnd-MiB/dev the heap in use when the transfer ends, garbage and pooled
// buffers included.
func BenchmarkNetstackBaseline(b *testing.B) {
	base := heapInUse()
	srvAddr, cliAddr := netip.MustParseAddr("10.98.0.2"), netip.MustParseAddr("10.98.0.1")
	srv, cli := nsbNewNode(b, srvAddr), nsbNewNode(b, cliAddr)
	nsbPeer(b, srv, cli, cliAddr)
	nsbPeer(b, cli, srv, srvAddr)

	ln, err := srv.stack.ListenTCP(netip.AddrPortFrom(srvAddr, 9000))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		if err == nil {
			err = binary.Write(c, binary.BigEndian, n)
		}
		srvErr <- err
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := cli.stack.DialContext(ctx, "tcp", netip.AddrPortFrom(srvAddr, 9000))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, nsbChunk)
	if _, err := rand.Read(chunk); err != nil {
		b.Fatal(err)
	}

	b.SetBytes(nsbChunk)
	b.ReportAllocs()
	b.ResetTimer()
	pushThrough(b, c, b.N, chunk) // the receiver's count is checked there
	b.StopTimer()
	if err := <-srvErr; err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	peak, live := ms.HeapInuse, heapInUse()
	b.ReportMetric(float64(max(live, base)-base)/2/(1<<20), "heap-MiB/dev")
	b.ReportMetric(float64(max(peak, base)-base)/2/(1<<20), "heapEnd-MiB/dev")
}
