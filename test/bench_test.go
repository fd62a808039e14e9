package test

import (
	"net"
	"testing"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// pushThrough writes chunks×chunk bytes on c, half-closes, and checks the sink's count
// (pushCounted, on the test's goroutine).
func pushThrough(tb testing.TB, c net.Conn, chunks int, chunk []byte) {
	if err := pushCounted(c, chunks*len(chunk), chunk); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkTunnelThroughput: bulk TCP upload through SOCKS5 → tunnel → exit → sink on 127.0.0.1,
// MTU 1420 on both devices. Compare with BenchmarkNetstackBaseline (two bare devices).
func BenchmarkTunnelThroughput(b *testing.B) {
	sink := testutil.SinkServer(b)
	e := startExitEngine(b, "bench", nil)
	tun := openTunnel(b, e, "bench")
	d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	c, err := d.Dial("tcp", sink.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	pushThrough(b, c, b.N, chunk)
}
