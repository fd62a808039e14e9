package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// BenchmarkDirectoryAnnouncements: what 1,000 operator-certified exits' announcements cost a client
// engine's directory. Each round, every exit announces once (a new load), and the round ends when
// the directory lists every new load; b.N is rounded up to whole rounds. Reports the wall time per
// announcement through NATS, signaling and the directory (decode, two signature checks — the
// announcement's and its certificate's — and the entry's replacement; the directory is one actor,
// so it is also about its CPU time), and the bytes of one announcement on the wire.
func BenchmarkDirectoryAnnouncements(b *testing.B) {
	const exits = 1000
	ns := startNATS(b, nil)
	op, err := signaling.NewOperatorKey()
	if err != nil {
		b.Fatal(err)
	}
	client := startSecureEngine(b, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}},
		Trust: engine.TrustConfig{Operators: []string{op.Public()}}})
	if _, err := client.Exits(context.Background()); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ids := make([]*signaling.Identity, exits)
	certs := make([]string, exits)
	for i := range ids {
		if ids[i], err = signaling.NewIdentity(); err != nil {
			b.Fatal(err)
		}
		if certs[i], err = op.Certify(signaling.CertExit, fmt.Sprintf("exit-%04d", i), ids[i].ID(), time.Hour, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	rounds := (b.N + exits - 1) / exits
	size := 0
	b.ResetTimer()
	for r := 1; r <= rounds; r++ {
		b.StopTimer()
		batch := make([][]byte, exits)
		for i := range batch {
			a := &messages.ExitAnnouncement{ExitID: fmt.Sprintf("exit-%04d", i), Certificate: certs[i], Endpoint: "192.0.2.1:51820",
				Labels: map[string]string{"region": "eu", "tier": "a"}, Capacity: 65000, Load: messages.ExitLoad{Sessions: r, Flows: 10 * r},
				State: messages.ExitServing, Version: "v0.13.0", IntervalMS: 10_000}
			ids[i].SignExitAnnouncement(a, time.Now())
			if batch[i], err = signaling.Encode(messages.TypeExitAnnouncement, a); err != nil {
				b.Fatal(err)
			}
			size = len(batch[i])
		}
		b.StartTimer()
		for _, data := range batch {
			if err := nc.Publish(signaling.AnnounceSubject, data); err != nil {
				b.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		if !testutil.Until(30*time.Second, func(ctx context.Context) bool {
			list, err := client.Exits(ctx)
			if err != nil || len(list) != exits {
				return false
			}
			for _, x := range list {
				if x.Load.Sessions != r {
					return false
				}
			}
			return true
		}) {
			b.Fatalf("round %d: not every announcement listed; %+v", r, client.SignalingStats())
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(rounds*exits)
	b.ReportMetric(float64(per.Microseconds()), "µs/announcement")
	b.ReportMetric(float64(size), "bytes/announcement")
	b.ReportMetric(0, "ns/op")
	if st := client.SignalingStats(); st.Dropped+st.AnnouncementsStale+st.AnnouncementsForged+st.AnnouncementsUntrusted != 0 {
		b.Fatalf("announcements dropped: %+v", st)
	}
}
