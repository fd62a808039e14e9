package netstack

import (
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// TestTCPStatsShared: both stacks of a pair count into the process-wide counters (gVisor's FillIn
// kept the pointers New passed), the DSACK counter that gVisor's recovery reads stays each stack's
// own, and a 4 MiB upload grows SegmentsSent by at least its data segments.
func TestTCPStatsShared(t *testing.T) {
	client, exit := newPair(t, Config{}, Config{})
	c := &stackCounters
	for _, n := range []*wgNode{client, exit} {
		st := n.stack.stack.Stats().TCP
		for _, f := range []struct {
			name      string
			got, want *tcpip.StatCounter
		}{
			{"SegmentsSent", st.SegmentsSent, &c.segmentsSent},
			{"Retransmits", st.Retransmits, &c.retransmits},
			{"FastRetransmit", st.FastRetransmit, &c.fastRetransmits},
			{"SlowStartRetransmits", st.SlowStartRetransmits, &c.slowStartRetransmits},
			{"Timeouts", st.Timeouts, &c.timeouts},
			{"FastRecovery", st.FastRecovery, &c.fastRecoveries},
			{"SACKRecovery", st.SACKRecovery, &c.sackRecoveries},
			{"TLPRecovery", st.TLPRecovery, &c.tlpRecoveries},
			{"SpuriousRecovery", st.SpuriousRecovery, &c.spuriousRecoveries},
		} {
			if f.got != f.want {
				t.Errorf("stack's TCP.%s is not the shared counter", f.name)
			}
		}
	}
	cd, ed := client.stack.stack.Stats().TCP.SegmentsAckedWithDSACK, exit.stack.stack.Stats().TCP.SegmentsAckedWithDSACK
	if cd == nil || ed == nil || cd == ed {
		t.Errorf("SegmentsAckedWithDSACK: client %p, exit %p: want a counter of each stack's own", cd, ed)
	}

	const size = 4 << 20
	ln, err := exit.stack.ListenTCP(netip.AddrPortFrom(exitAddr, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(testTimeout))
		n, _ := io.Copy(io.Discard, s)
		_ = binary.Write(s, binary.BigEndian, n)
		got <- n
	}()

	before := ReadTCPStats()
	conn := client.dial(t, "tcp", netip.AddrPortFrom(exitAddr, 8080))
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.Copy(conn, testutil.Payload(3, size)); err != nil {
		t.Fatal(err)
	}
	if err := conn.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var echoed int64
	if err := binary.Read(conn, binary.BigEndian, &echoed); err != nil {
		t.Fatalf("count after half-close: %v", err)
	}
	if n := testutil.Await(t, got, testTimeout, "server"); n != size || echoed != size {
		t.Fatalf("server read %d bytes (answered %d), want %d", n, echoed, size)
	}
	after := ReadTCPStats()

	// The client's data segments alone: no segment carries more than an MSS, which is below
	// MTU - 40 (IPv4 and TCP headers without options). The exit's ACKs and its answer come on top.
	minData := uint64(size / (DefaultMTU - 40))
	if d := after.SegmentsSent - before.SegmentsSent; d < minData+1 {
		t.Errorf("SegmentsSent grew by %d during a %d-byte upload, want at least %d", d, size, minData+1)
	}
	if after.Retransmits < before.Retransmits || after.Timeouts < before.Timeouts {
		t.Errorf("counters went back: before %+v, after %+v", before, after)
	}
	t.Logf("during the upload: %d segments sent, %d retransmitted", after.SegmentsSent-before.SegmentsSent, after.Retransmits-before.Retransmits)
}

// TestReadTCPStatsFields: each field of ReadTCPStats reads its own counter. It adds to the
// process-wide counters and expects the exact sums, so no stack may send meanwhile: the pairs of
// earlier tests are closed at their cleanup, and this package's parallel tests start only after
// every sequential one.
func TestReadTCPStatsFields(t *testing.T) {
	c := &stackCounters
	counters := []*tcpip.StatCounter{&c.segmentsSent, &c.retransmits, &c.fastRetransmits, &c.slowStartRetransmits,
		&c.timeouts, &c.fastRecoveries, &c.sackRecoveries, &c.tlpRecoveries, &c.spuriousRecoveries}
	fields := func(s TCPStats) []uint64 {
		return []uint64{s.SegmentsSent, s.Retransmits, s.FastRetransmits, s.SlowStartRetransmits,
			s.Timeouts, s.FastRecoveries, s.SACKRecoveries, s.TLPRecoveries, s.SpuriousRecoveries}
	}
	before := fields(ReadTCPStats())
	for i, sc := range counters {
		sc.IncrementBy(uint64(1000 + i))
	}
	after := fields(ReadTCPStats())
	for i := range counters {
		if d := after[i] - before[i]; d != uint64(1000+i) {
			t.Errorf("field %d grew by %d, want %d (it reads another counter)", i, d, 1000+i)
		}
	}
}
