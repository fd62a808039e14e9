package netstack

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
)

// TestBindSegmentedBatches: batches of same-sized datagrams with a shorter one at the end (what a
// bulk TCP transfer makes), mixed sizes and more datagrams than one message may join go from one
// Bind to another, over IPv4 and IPv6 loopback, and come out whole, in order and from the right
// sender, read two and then up to 64 at a time. On 64-bit Linux both sides must be using UDP
// segmentation offload.
func TestBindSegmentedBatches(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			ip := netip.MustParseAddr(addr)
			a, b := NewBind(ip), NewBind(ip)
			fns, portA, err := a.Open(0)
			if err != nil {
				t.Skipf("no loopback %s: %v", addr, err)
			}
			defer a.Close()
			if _, _, err := b.Open(0); err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") && b.gso == nil {
				t.Fatal("no UDP_SEGMENT on this Linux")
			}
			ep, err := b.ParseEndpoint(netip.AddrPortFrom(ip, portA).String())
			if err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			batch := func(sizes ...int) [][]byte {
				var bufs [][]byte
				for _, n := range sizes {
					p := bytes.Repeat([]byte{byte(len(want))}, n)
					p[0] = byte(len(want) >> 8)
					want = append(want, p)
					bufs = append(bufs, p)
				}
				return bufs
			}
			run := func(n, size, last int) []int {
				s := make([]int, n, n+1)
				for i := range s {
					s[i] = size
				}
				if last > 0 {
					s = append(s, last)
				}
				return s
			}
			sends := [][][]byte{
				batch(run(40, 1452, 300)...),         // one run and its shorter tail
				batch(run(64, 1452, 0)...),           // more than fit one message (payload bound)
				batch(1452, 1452, 80, 1452, 9000, 1), // mixed: each change starts a message
				batch(run(64, 100, 0)...),            // segment-count bound
			}
			for _, s := range sends {
				if err := b.Send(s, ep); err != nil {
					t.Fatal(err)
				}
			}
			var got [][]byte
			width := 2
			deadline := time.Now().Add(testTimeout)
			for len(got) < len(want) && time.Now().Before(deadline) {
				bufs := make([][]byte, width)
				for i := range bufs {
					bufs[i] = make([]byte, 9216)
				}
				sizes := make([]int, width)
				eps := make([]conn.Endpoint, width)
				_ = a.udp.SetReadDeadline(deadline)
				k, err := fns[0](bufs, sizes, eps)
				if err != nil {
					t.Fatal(err)
				}
				for i := range k {
					if e := eps[i].(*Endpoint); e.AddrPort != b.LocalAddrPort() {
						t.Fatalf("datagram %d from %v, want %v", len(got), e.AddrPort, b.LocalAddrPort())
					}
					got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
				}
				width = 64
			}
			if len(got) != len(want) {
				t.Fatalf("got %d datagrams, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d: %d bytes %s, want %d bytes %s", i, len(got[i]), head(got[i]), len(want[i]), head(want[i]))
				}
			}
		})
	}
}

func head(p []byte) string { return fmt.Sprintf("%x", p[:min(len(p), 4)]) }
