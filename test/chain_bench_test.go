package test

// Side by side (issue 17, first step): the same bulk upload through Warren's chain and through a
// chain built only from stock parts, in one `go test -bench` invocation, so that their ratio is
// measured in one run on one machine:
//
//	go test ./test -run '^$' -bench BenchmarkChain -benchtime 5x -count 3
//
// warren: SOCKS5 client → Warren tunnel (proxy, netstack, WireGuard) → Warren exit → sink.
// stock:  SOCKS5 client → a minimal SOCKS5 front → upstream wireguard-go on upstream tun/netstack
//         (conn.NewDefaultBind: its Linux batching and offloads) → the same at the far end → a
//         plain forwarder (io.Copy) → sink. No Warren code on the path.
//
// Each op uploads 32 MiB in all over 1 or 16 streams at once; the sink's count of each stream is
// checked. Besides MB/s: jain (Jain's fairness index of the streams' rates; 1 is perfectly fair)
// and slowest-MB/s, fastest-MB/s (per stream). Over the timed ops, also:
//
//   - cpu-ms/MB: the process's CPU time (user and system, getrusage) per MB (10^6 bytes)
//     uploaded. It is the whole process's: the benchmark's own SOCKS5 clients and sink run in it
//     too, as does everything of the other chain still closing; so it compares the two chains'
//     costs on the path, not a Warren figure on its own.
//   - segments/op (warren only): TCP segments Warren's netstacks sent, data (MSS-sized: gVisor
//     cuts a large write into them before counting) and pure ACKs alike.
//   - retransmits/op (warren only): TCP segments Warren's netstacks sent again
//     (netstack.ReadTCPStats, process-wide: the client's and the exit's stacks, both directions).
//     The stock chain's stacks are upstream's and are not counted.
//   - stack-drops/op (warren only): packets Warren's netstacks dropped themselves, at the
//     transport layer (a connection's full segment queue) or at the link (its queue to the device
//     full for fullWait): netstack.TCPStats TransportDrops + LinkDrops.
//   - udp-rcvbuf-drops/op: the kernel's Udp RcvbufErrors (/proc/net/snmp; left out where it
//     cannot be read): IPv4 datagrams dropped because a socket's receive buffer was full. The
//     count is the network namespace's, not the process's: anything else running on the machine
//     adds to it.

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/netstack"
)

const chainBytes = 32 << 20 // per op, over all streams

func BenchmarkChain(b *testing.B) {
	for _, streams := range []int{1, 16} {
		b.Run(fmt.Sprintf("warren/streams=%d", streams), func(b *testing.B) {
			sink := testutil.SinkServer(b)
			e := startExitEngine(b, "chain", nil)
			tun := openTunnel(b, e, "chain")
			runChain(b, streams, true, func() (net.Conn, error) {
				d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
				if err != nil {
					return nil, err
				}
				return d.Dial("tcp", sink.Addr())
			})
		})
		b.Run(fmt.Sprintf("stock/streams=%d", streams), func(b *testing.B) {
			sink := testutil.SinkServer(b)
			front := stockChain(b, sink.Addr())
			runChain(b, streams, false, func() (net.Conn, error) {
				d, err := proxy.SOCKS5("tcp", front, nil, proxy.Direct)
				if err != nil {
					return nil, err
				}
				return d.Dial("tcp", sink.Addr())
			})
		})
	}
}

// runChain uploads chainBytes per op over streams connections at once and reports the rates, the
// CPU time per MB, the kernel's UDP receive-buffer drops and, for Warren's chain (warren), its
// netstacks' retransmissions.
func runChain(b *testing.B, streams int, warren bool, dial func() (net.Conn, error)) {
	per := chainBytes / streams
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	rates := make([]float64, 0, streams*b.N)
	b.SetBytes(chainBytes)
	tcp0 := netstack.ReadTCPStats()
	drops0, dropsOK := udpRcvbufErrors()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		var mu sync.Mutex
		errs := make(chan error, streams)
		for range streams {
			wg.Go(func() {
				c, err := dial()
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(benchStall))
				start := time.Now()
				if err := pushCounted(c, per, chunk); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				rates = append(rates, float64(per)/time.Since(start).Seconds()/1e6)
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	drops1, drops1OK := udpRcvbufErrors()
	tcp1 := netstack.ReadTCPStats()
	ops := float64(b.N)
	b.ReportMetric(float64(cpu.Nanoseconds())/1e6/(ops*chainBytes/1e6), "cpu-ms/MB")
	if warren {
		b.ReportMetric(float64(tcp1.Retransmits-tcp0.Retransmits)/ops, "retransmits/op")
		b.ReportMetric(float64(tcp1.SegmentsSent-tcp0.SegmentsSent)/ops, "segments/op")
		b.ReportMetric(float64(tcp1.TransportDrops+tcp1.LinkDrops-tcp0.TransportDrops-tcp0.LinkDrops)/ops, "stack-drops/op")
	}
	if dropsOK && drops1OK {
		b.ReportMetric(float64(drops1-drops0)/ops, "udp-rcvbuf-drops/op")
	}
	var sum, sq, lo, hi float64
	lo = rates[0]
	for _, r := range rates {
		sum, sq, lo, hi = sum+r, sq+r*r, min(lo, r), max(hi, r)
	}
	b.ReportMetric(sum*sum/(float64(len(rates))*sq), "jain")
	b.ReportMetric(lo, "slowest-MB/s")
	b.ReportMetric(hi, "fastest-MB/s")
}

// pushCounted writes n bytes of chunk on c, half-closes, and checks the sink's count.
func pushCounted(c net.Conn, n int, chunk []byte) error {
	for left := n; left > 0; {
		k := min(left, len(chunk))
		if _, err := c.Write(chunk[:k]); err != nil {
			return err
		}
		left -= k
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return err
	}
	if got != int64(n) {
		return fmt.Errorf("sink got %d bytes, want %d", got, n)
	}
	return nil
}

// udpRcvbufErrors reads the kernel's Udp RcvbufErrors from /proc/net/snmp: IPv4 UDP datagrams
// dropped because a socket's receive buffer was full, in this network namespace, since boot. ok is
// false where the file or the field cannot be read.
func udpRcvbufErrors() (n uint64, ok bool) {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, false
	}
	var names []string // the "Udp:" header line; the next "Udp:" line holds the values
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(f) {
				n, err := strconv.ParseUint(f[i], 10, 64)
				return n, err == nil
			}
		}
		return 0, false
	}
	return 0, false
}
