package test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// BenchmarkWireGuardExit: bulk TCP upload to a sink on 127.0.0.1 through a standard WireGuard
// server (testutil.WGServer: upstream wireguard-go, no Warren code, forwarding a port of its
// address to the sink), from
//
//   - warren: a Warren tunnel whose exit is that server (wireguard_exits), through its SOCKS5 proxy;
//   - stock: a standard userspace client, upstream wireguard-go on upstream tun/netstack (what
//     wireproxy runs), dialling the server's forwarded port directly (no proxy in front).
//
// Both at MTU 1420 on loopback UDP, one stream, the sink's byte count checked after EOF. The
// server is the same code in both, so the difference is the client's: Warren's netstack and
// device against upstream's (whose TCP has RACK on, and was seen to stall under load here).
func BenchmarkWireGuardExit(b *testing.B) {
	const port = 9000
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 13)
	}
	b.Run("warren", func(b *testing.B) {
		sink := testutil.SinkServer(b)
		srv := testutil.StartWGServer(b, testutil.WGServerConfig{Forward: map[uint16]string{port: sink.Addr()}})
		client := startEngine(b, engine.Config{WireGuardExits: []engine.WireGuardExitSpec{{Name: "bench", File: srv.WriteClientConfig(b)}}})
		tun := openTunnel(b, client, "wg:bench")
		d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
		if err != nil {
			b.Fatal(err)
		}
		c, err := d.Dial("tcp", netip.AddrPortFrom(srv.Address(), port).String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(benchStall))
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		b.ResetTimer()
		pushThrough(b, c, b.N, chunk)
	})
	b.Run("stock", func(b *testing.B) {
		sink := testutil.SinkServer(b)
		srv := testutil.StartWGServer(b, testutil.WGServerConfig{Forward: map[uint16]string{port: sink.Addr()}})
		_, tnet := stockDevice(b, srv.Peer(), srv.ClientKey(), srv.PublicKey(), srv.Endpoint().String(), netip.PrefixFrom(srv.Address(), 32))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(srv.Address(), port))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(benchStall)) // upstream tun/netstack's TCP has been seen to stall for good here
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		b.ResetTimer()
		pushThrough(b, c, b.N, chunk)
	})
}

// benchStall bounds one sub-benchmark's transfer: a stalled stream fails it instead of hanging.
const benchStall = 2 * time.Minute
