package test

// The exit directory of a client engine (docs/pool.md): it fills from exits' signed announcements
// and from one discovery round at its start, follows draining, leaving and silent exits, and
// — the bus being hostile (docs/security.md) — changes for nothing but a genuine, trusted, newer
// announcement. Exits here are stand-ins (fakeexit.Exit): real NATS clients with their own
// identities that publish genuine signed announcements and answer discovery, without a data plane.

import (
	"bytes"
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/fakeexit"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// exitsByID is Engine.Exits as a map, for polling.
func exitsByID(e *engine.Engine) func(context.Context) (map[string]*engine.ExitEntry, error) {
	return func(ctx context.Context) (map[string]*engine.ExitEntry, error) {
		list, err := e.Exits(ctx)
		if err != nil {
			return nil, err
		}
		if !slices.IsSortedFunc(list, func(a, b *engine.ExitEntry) int { return strings.Compare(a.ID, b.ID) }) {
			panic("Exits not sorted by id")
		}
		m := map[string]*engine.ExitEntry{}
		for _, x := range list {
			m[x.ID] = x
		}
		return m, nil
	}
}

// pollExits waits until the directory of e satisfies ok, and returns it.
func pollExits(t *testing.T, e *engine.Engine, within time.Duration, what string, ok func(map[string]*engine.ExitEntry) bool) map[string]*engine.ExitEntry {
	t.Helper()
	return testutil.Poll(t, within, what, exitsByID(e), ok)
}

var serving = messages.ExitServing

// TestDirectoryDiscoversAndFollowsExits: three exits announced themselves before the client
// started, with a cadence of a minute; a new client engine lists all three from its discovery round
// alone, within a second. Then an exit joins by announcing, one drains (listed, not serving), one
// leaves (gone at once), and a replay of the leaver's older announcement does not bring it back.
func TestDirectoryDiscoversAndFollowsExits(t *testing.T) {
	ns := startNATS(t, nil)
	var answered atomic.Int64
	exits := map[string]*fakeexit.Exit{}
	for _, id := range []string{"exit-a", "exit-b", "exit-c"} {
		x := fakeexit.New(t, ns.URL(), id)
		x.Interval = time.Minute // only discovery can explain an early listing
		x.Labels = map[string]string{"region": "eu", "name": id}
		x.AnswerDiscovery(&answered)
		x.Announce(serving, messages.ExitLoad{Sessions: 1}) // nobody listens yet
		exits[id] = x
	}
	client := startEngine(t, natsClient(ns))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	list, err := client.Exits(ctx)
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	if took > 3*time.Second {
		t.Fatalf("the first Exits took %v: a discovery round should be done in about half a second", took)
	}
	if len(list) != 3 || answered.Load() != 3 {
		t.Fatalf("discovery listed %d exits (%d answers), want 3", len(list), answered.Load())
	}
	for i, e := range list {
		x := exits[e.ID]
		if x == nil || e.ID != []string{"exit-a", "exit-b", "exit-c"}[i] {
			t.Fatalf("entry %d is %q", i, e.ID)
		}
		if e.Identity != x.Identity.ID() || e.Endpoint != x.Endpoint || !maps.Equal(e.Labels, x.Labels) ||
			e.State != serving || !e.Serving() || e.Interval != time.Minute || e.Load.Sessions != 1 ||
			e.Capacity != 100 || e.Version != "test" || e.Seen.Before(began) {
			t.Fatalf("entry %+v, from %v", e, x)
		}
	}
	t.Logf("discovered 3 exits in %v", took)

	// A fourth exit joins by announcing; exit-a's load changes.
	d := fakeexit.New(t, ns.URL(), "exit-d")
	d.Announce(serving, messages.ExitLoad{})
	exits["exit-a"].Announce(serving, messages.ExitLoad{Sessions: 5, Flows: 9})
	pollExits(t, client, 5*time.Second, "exit-d listed and exit-a's new load", func(m map[string]*engine.ExitEntry) bool {
		return len(m) == 4 && m["exit-d"] != nil && m["exit-a"].Load == messages.ExitLoad{Sessions: 5, Flows: 9}
	})

	// exit-b drains: still listed, not serving.
	exits["exit-b"].Announce(messages.ExitDraining, messages.ExitLoad{Sessions: 1})
	m := pollExits(t, client, 5*time.Second, "exit-b draining", func(m map[string]*engine.ExitEntry) bool {
		return m["exit-b"] != nil && m["exit-b"].State == messages.ExitDraining
	})
	if m["exit-b"].Serving() || len(m) != 4 {
		t.Fatalf("draining exit-b: %+v (of %d)", m["exit-b"], len(m))
	}

	// exit-c leaves: dropped at once, long before three of its minute-long intervals.
	old := exits["exit-c"].Announcement(serving, messages.ExitLoad{Sessions: 1})
	exits["exit-c"].Announce(messages.ExitLeaving, messages.ExitLoad{})
	pollExits(t, client, 2*time.Second, "exit-c gone", func(m map[string]*engine.ExitEntry) bool {
		return m["exit-c"] == nil && len(m) == 3
	})
	// Its older announcement, replayed: counted as stale, and it stays gone.
	stale := client.SignalingStats().AnnouncementsStale
	exits["exit-c"].Publish(signaling.AnnounceSubject, old)
	waitFor(t, 5*time.Second, "the replay to be counted", func() bool { return client.SignalingStats().AnnouncementsStale == stale+1 })
	if m := pollExits(t, client, time.Second, "the directory", func(map[string]*engine.ExitEntry) bool { return true }); m["exit-c"] != nil {
		t.Fatalf("a replay brought exit-c back: %+v", m["exit-c"])
	}
	if st := client.SignalingStats(); st.AnnouncementsForged+st.AnnouncementsUntrusted+st.AnnouncementsMalformed != 0 {
		t.Fatalf("genuine announcements dropped: %+v", st)
	}
}

// TestDirectoryExpiresSilentExits: an exit that announces every 100 ms stays listed while it does,
// and is dropped once it has missed three announcements; a replay of its last announcement does
// not bring it back, a fresh one does.
func TestDirectoryExpiresSilentExits(t *testing.T) {
	ns := startNATS(t, nil)
	x := fakeexit.New(t, ns.URL(), "blinker")
	x.Interval = 100 * time.Millisecond
	client := startEngine(t, natsClient(ns))
	if _, err := client.Exits(context.Background()); err != nil { // the directory runs from here on
		t.Fatal(err)
	}
	stop := x.AnnounceEvery()
	first := pollExits(t, client, 5*time.Second, "the exit listed", func(m map[string]*engine.ExitEntry) bool { return m["blinker"] != nil })
	// Ten intervals later it is still listed, from newer announcements.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		m := pollExits(t, client, time.Second, "the directory", func(map[string]*engine.ExitEntry) bool { return true })
		if m["blinker"] == nil {
			t.Fatal("an exit that announces every interval was dropped")
		}
	}
	now := pollExits(t, client, time.Second, "the directory", func(map[string]*engine.ExitEntry) bool { return true })
	if !now["blinker"].Announced.After(first["blinker"].Announced) {
		t.Fatalf("the entry was not refreshed: %v, first %v", now["blinker"].Announced, first["blinker"].Announced)
	}
	stop()
	last := x.Announcement(serving, messages.ExitLoad{}) // signed, never sent: a later replay of it
	x.Publish(signaling.AnnounceSubject, last)
	silent := time.Now()
	pollExits(t, client, 3*time.Second, "the silent exit dropped", func(m map[string]*engine.ExitEntry) bool { return m["blinker"] == nil })
	took := time.Since(silent)
	if took < 3*x.Interval-50*time.Millisecond {
		t.Fatalf("dropped %v after its last announcement, before it missed three", took)
	}
	t.Logf("dropped %v after its last announcement (interval %v)", took, x.Interval)

	stale := client.SignalingStats().AnnouncementsStale
	x.Publish(signaling.AnnounceSubject, last)
	waitFor(t, 5*time.Second, "the replay to be counted", func() bool { return client.SignalingStats().AnnouncementsStale == stale+1 })
	if m := pollExits(t, client, time.Second, "the directory", func(map[string]*engine.ExitEntry) bool { return true }); m["blinker"] != nil {
		t.Fatal("a replay of its last announcement brought the expired exit back")
	}
	x.Announce(serving, messages.ExitLoad{Sessions: 2})
	pollExits(t, client, 5*time.Second, "the exit back", func(m map[string]*engine.ExitEntry) bool {
		return m["blinker"] != nil && m["blinker"].Load.Sessions == 2
	})
}

// TestDirectoryDropsWhatIsNotGenuine: a client that trusts one operator lists the exit that
// operator certified. An attacker on the bus answers discovery and announces: a genuine
// announcement tampered with, one with the exit's identity and its own signature, one signed three
// minutes ago; announcements under the exit's id signed by its own identity — without a
// certificate, with the exit's certificate, with one from another operator, saying the exit
// leaves — and one for an exit of its own; a replay of the exit's older announcement; and junk,
// oversize and ill-typed messages. Each is dropped and counted as what it is, and the exit's entry
// stays exactly as its newest genuine announcement made it.
func TestDirectoryDropsWhatIsNotGenuine(t *testing.T) {
	ns := startNATS(t, nil)
	op, err := signaling.NewOperatorKey()
	if err != nil {
		t.Fatal(err)
	}
	g := fakeexit.New(t, ns.URL(), "genuine")
	if g.Cert, err = op.Certify(signaling.CertExit, "genuine", g.Identity.ID(), time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	g.AnswerDiscovery(nil)
	evil := newAttacker(t, ns.URL())
	// The attacker answers discovery too: under the exit's id with its own identity, and with junk.
	sub, err := evil.nc.Subscribe(signaling.DiscoverSubject, func(m *nats.Msg) {
		a := &messages.ExitAnnouncement{ExitID: "genuine", Endpoint: "127.0.0.1:9", State: serving, Version: "evil", IntervalMS: 1000}
		evil.id.SignExitAnnouncement(a, time.Now())
		evil.publish(m.Reply, "", messages.TypeExitAnnouncement, a)
		_ = evil.nc.Publish(m.Reply, []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := evil.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	client := startSecureEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}},
		Trust: engine.TrustConfig{Operators: []string{op.Public()}}})

	older := g.Announce(serving, messages.ExitLoad{Sessions: 1}) // before the client listens
	m := pollExits(t, client, 5*time.Second, "the certified exit discovered", func(m map[string]*engine.ExitEntry) bool { return m["genuine"] != nil })
	if m["genuine"].Identity != g.Identity.ID() || len(m) != 1 {
		t.Fatalf("discovery listed %+v", m)
	}
	base := client.SignalingStats()
	if base.AnnouncementsUntrusted < 1 || base.AnnouncementsMalformed < 1 {
		t.Fatalf("the attacker's answers to discovery not counted: %+v", base)
	}
	newest := g.Announce(serving, messages.ExitLoad{Sessions: 2, Flows: 3})
	entry := pollExits(t, client, 5*time.Second, "the exit's newest load", func(m map[string]*engine.ExitEntry) bool {
		return m["genuine"] != nil && m["genuine"].Load.Sessions == 2
	})["genuine"]

	pub := func(a *messages.ExitAnnouncement) {
		evil.publish(signaling.AnnounceSubject, "", messages.TypeExitAnnouncement, a)
	}
	// Forged: tampered, another's signature, off the clock.
	tampered := *newest
	tampered.Load.Sessions = 99
	pub(&tampered)
	swapped := g.Announcement(serving, messages.ExitLoad{Sessions: 98})
	evil.id.SignExitAnnouncement(swapped, time.Now())
	swapped.Identity = g.Identity.ID()
	pub(swapped)
	ancient := g.Announcement(serving, messages.ExitLoad{Sessions: 97})
	g.Identity.SignExitAnnouncement(ancient, time.Now().Add(-3*time.Minute))
	pub(ancient)
	// Untrusted: the attacker's identity under the exit's id, however presented; and its own exit.
	evilOp, _ := signaling.NewOperatorKey()
	evilCert, _ := evilOp.Certify(signaling.CertExit, "genuine", evil.id.ID(), time.Hour, time.Now())
	for _, c := range []struct{ id, cert, state string }{
		{"genuine", "", serving}, {"genuine", g.Cert, serving}, {"genuine", evilCert, serving},
		{"genuine", "", messages.ExitLeaving}, {"rogue", "", serving},
	} {
		a := &messages.ExitAnnouncement{ExitID: c.id, Certificate: c.cert, Endpoint: "127.0.0.1:9", State: c.state,
			Version: "evil", IntervalMS: 1000, Load: messages.ExitLoad{Sessions: 96}}
		evil.id.SignExitAnnouncement(a, time.Now())
		pub(a)
	}
	// Stale: the exit's own older announcement, replayed.
	pub(older)
	// Malformed: junk, oversize, another type, an invalid field.
	bad := *newest
	bad.Endpoint = "not an endpoint"
	badData, _ := signaling.Encode(messages.TypeExitAnnouncement, &bad)
	ping, _ := signaling.Encode(messages.TypeExitsDiscover, &messages.ExitsDiscover{Nonce: "00112233445566778899aabbccddeeff"})
	for _, data := range [][]byte{[]byte("junk"), bytes.Repeat([]byte("x"), messages.MaxWireSize+1), ping, badData} {
		if err := evil.nc.Publish(signaling.AnnounceSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := evil.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	want := base
	want.AnnouncementsForged += 3
	want.AnnouncementsUntrusted += 5
	want.AnnouncementsStale++
	want.AnnouncementsMalformed += 4
	waitFor(t, 5*time.Second, "every drop counted", func() bool { return client.SignalingStats() == want })
	m = pollExits(t, client, time.Second, "the directory", func(map[string]*engine.ExitEntry) bool { return true })
	if len(m) != 1 || !sameEntry(m["genuine"], entry) {
		t.Fatalf("the directory changed: %+v, want only %+v", m, entry)
	}
	// The genuine exit still updates it.
	g.Announce(messages.ExitDraining, messages.ExitLoad{Sessions: 2})
	pollExits(t, client, 5*time.Second, "the genuine exit draining", func(m map[string]*engine.ExitEntry) bool {
		return m["genuine"] != nil && m["genuine"].State == messages.ExitDraining
	})
}

// sameEntry: every field equal, the labels as maps.
func sameEntry(a, b *engine.ExitEntry) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := *a, *b
	x.Labels, y.Labels = nil, nil
	return reflect.DeepEqual(x, y) && maps.Equal(a.Labels, b.Labels)
}

// TestDirectoryFloodIsBounded: an attacker publishes 50,000 well-formed announcements with bad
// signatures (each costs the directory a signature check) as fast as it can. What waits is bounded
// — the rest is dropped and counted — the listed exit stays, and once the flood has passed a
// genuine announcement changes the directory again.
func TestDirectoryFloodIsBounded(t *testing.T) {
	ns := startNATS(t, nil)
	g := fakeexit.New(t, ns.URL(), "steady")
	g.AnswerDiscovery(nil)
	client := startEngine(t, natsClient(ns))
	newest := g.Announce(serving, messages.ExitLoad{Sessions: 1})
	pollExits(t, client, 5*time.Second, "the exit listed", func(m map[string]*engine.ExitEntry) bool { return m["steady"] != nil })

	forged := *newest
	forged.Load.Sessions = 1000
	data, err := signaling.Encode(messages.TypeExitAnnouncement, &forged)
	if err != nil {
		t.Fatal(err)
	}
	evil := newAttacker(t, ns.URL())
	const flood = 50_000
	for range flood {
		if err := evil.nc.Publish(signaling.AnnounceSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := evil.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the flood to be bounded", func() bool {
		st := client.SignalingStats()
		return st.Dropped+st.SlowConsumer > 0
	})
	// Once the flood is behind the directory, a genuine announcement (repeated: one sent while the
	// backlog is full is dropped like the flood) changes it.
	testutil.Poll(t, 60*time.Second, "a genuine announcement after the flood", func(ctx context.Context) (map[string]*engine.ExitEntry, error) {
		g.Announce(serving, messages.ExitLoad{Sessions: 7})
		return exitsByID(client)(ctx)
	}, func(m map[string]*engine.ExitEntry) bool { return m["steady"] != nil && m["steady"].Load.Sessions == 7 })
	st := client.SignalingStats()
	t.Logf("flood of %d: forged %d, dropped %d, NATS slow-consumer reports %d", flood, st.AnnouncementsForged, st.Dropped, st.SlowConsumer)
	if st.AnnouncementsForged == 0 || st.AnnouncementsForged > flood { // Dropped counts genuine announcements lost in the flood too
		t.Fatalf("counters %+v", st)
	}
}
