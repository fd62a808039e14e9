package test

// Exit announcements and discovery on a real NATS bus, read by a plain NATS client: each exit
// announces itself, signed, at its cadence, with its labels, capacity, load and state; a discovery
// request is answered by every announcing exit with a freshly signed announcement, at a bounded
// rate; an exit that closes announces that it leaves.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// announceHeard is one message read on an announcement or reply subject: the announcement, or why
// it was not one (decoding or verification failed).
type announceHeard struct {
	a   *messages.ExitAnnouncement
	err error
	at  time.Time
}

// readAnnouncement decodes and verifies data as an exit announcement.
func readAnnouncement(data []byte) announceHeard {
	h := announceHeard{at: time.Now()}
	body, err := signaling.Decode(data)
	if err != nil {
		h.err = err
		return h
	}
	a, ok := body.(*messages.ExitAnnouncement)
	if !ok {
		h.err = signaling.ErrUnknownType
		return h
	}
	h.a, h.err = a, signaling.VerifyExitAnnouncement(a, time.Now())
	return h
}

// listenAnnouncements subscribes a plain NATS client to the announcement subject of the bus at url.
func listenAnnouncements(t testing.TB, url string) <-chan announceHeard {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan announceHeard, 4096)
	if _, err := nc.Subscribe(signaling.AnnounceSubject, func(m *nats.Msg) {
		select {
		case ch <- readAnnouncement(m.Data):
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// awaitAnnouncement waits for a verified announcement of exitID that ok accepts; every message read
// meanwhile must be a verified announcement.
func awaitAnnouncement(t testing.TB, ch <-chan announceHeard, within time.Duration, exitID, what string, ok func(*messages.ExitAnnouncement) bool) *messages.ExitAnnouncement {
	t.Helper()
	h := testutil.AwaitMatch(t, ch, within, exitID+": "+what, func(h announceHeard) bool {
		if h.err != nil {
			t.Errorf("announcement subject carried a message that does not verify: %v", h.err)
			return false
		}
		return h.a.ExitID == exitID && ok(h.a)
	})
	return h.a
}

func announcingExit(t testing.TB, ns *natsServer, id string, labels map[string]string, every time.Duration) *engine.Engine {
	t.Helper()
	_, seed := newIdentitySeed(t)
	return startExitEngine(t, id, func(c *engine.Config) {
		c.NATS.URLs, c.Identity = []string{ns.URL()}, seed
		c.Exit.Labels, c.Exit.AnnounceInterval = labels, engine.Duration(every)
	})
}

// TestExitAnnouncements: two exits announce at their cadence (200 ms), signed by their identities,
// with their labels, endpoint, capacity, version and state; the load follows a client's session and
// flow; an exit with announcements off says nothing; a discovery request is answered at once by
// every announcing exit, freshly signed; a flood of them is answered at the bounded rate and the
// rest dropped and counted; an exit that closes announces that it leaves.
func TestExitAnnouncements(t *testing.T) {
	ns := startNATS(t, nil)
	heardCh := listenAnnouncements(t, ns.URL())
	const every = 200 * time.Millisecond
	labelsA, labelsB := map[string]string{"region": "eu", "tier": "gold"}, map[string]string{"region": "us"}
	exitA := announcingExit(t, ns, "ann-a", labelsA, every)
	exitB := announcingExit(t, ns, "ann-b", labelsB, every)
	announcingExit(t, ns, "ann-off", nil, -1)

	// The cadence, and what an announcement says.
	var last *messages.ExitAnnouncement
	for i := range 4 {
		a := awaitAnnouncement(t, heardCh, 5*time.Second, "ann-a", "an announcement", func(*messages.ExitAnnouncement) bool { return true })
		if last != nil {
			gap := time.Duration(a.Timestamp-last.Timestamp) * time.Millisecond
			if gap < every*9/10 || gap > 5*every {
				t.Errorf("announcement %d came %v after the one before, want about %v", i, gap, every)
			}
		}
		last = a
	}
	infoA, _ := exitA.Exit()
	st := exitStatus(t, exitA)
	if last.Identity != exitA.ClientID() || !maps.Equal(last.Labels, labelsA) || last.State != messages.ExitServing ||
		last.Version != messages.SoftwareVersion || last.IntervalMS != every.Milliseconds() ||
		last.Endpoint != infoA.Endpoint.String() || last.Capacity != st.AddressesTotal-1 {
		t.Errorf("announcement %+v; want identity %s, labels %v, serving, version %s, interval %v, endpoint %s, capacity %d",
			last, exitA.ClientID(), labelsA, messages.SoftwareVersion, every, infoA.Endpoint, st.AddressesTotal-1)
	}
	b := awaitAnnouncement(t, heardCh, 5*time.Second, "ann-b", "an announcement", func(*messages.ExitAnnouncement) bool { return true })
	if b.Identity != exitB.ClientID() || !maps.Equal(b.Labels, labelsB) {
		t.Errorf("ann-b announced %+v", b)
	}

	// The load follows a session and a flow.
	echo := startServer(t, echoHandler)
	client := startEngine(t, natsClient(ns))
	tun := openTunnel(t, client, "ann-a")
	c := mustSocks(t, tun.SOCKSAddr(), echo.Addr())
	if err := roundTrip(c, "load"); err != nil {
		t.Fatal(err)
	}
	awaitAnnouncement(t, heardCh, 5*time.Second, "ann-a", "load of one session and one flow", func(a *messages.ExitAnnouncement) bool {
		return a.Load == messages.ExitLoad{Sessions: 1, Flows: 1}
	})
	c.Close()
	awaitAnnouncement(t, heardCh, 5*time.Second, "ann-a", "the flow gone", func(a *messages.ExitAnnouncement) bool {
		return a.Load == messages.ExitLoad{Sessions: 1, Flows: 0}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}
	awaitAnnouncement(t, heardCh, 5*time.Second, "ann-a", "the session gone", func(a *messages.ExitAnnouncement) bool {
		return a.Load == messages.ExitLoad{}
	})

	// Discovery: one request, a fresh answer from each announcing exit.
	asker, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer asker.Close()
	answers := askExits(t, asker, 1, 0, 500*time.Millisecond) // and no third, from ann-off
	byExit := map[string]int{}
	for _, h := range answers {
		if h.err != nil {
			t.Errorf("discovery answer does not verify: %v", h.err)
			continue
		}
		byExit[h.a.ExitID]++
	}
	if len(answers) != 2 || byExit["ann-a"] != 1 || byExit["ann-b"] != 1 {
		t.Errorf("discovery answers by exit %v (%d in all), want one from ann-a and one from ann-b", byExit, len(answers))
	}

	// A flood of requests is answered at the bounded rate (a burst of 50, then 20 a second).
	dropped := exitA.SignalingStats().Dropped
	flood := askExits(t, asker, 300, 0, 500*time.Millisecond)
	fromA := 0
	for _, h := range flood {
		if h.err == nil && h.a.ExitID == "ann-a" {
			fromA++
		}
	}
	t.Logf("a flood of 300 discovery requests: %d answers from ann-a, %d dropped", fromA, exitA.SignalingStats().Dropped-dropped)
	if fromA < 40 || fromA > 90 {
		t.Errorf("ann-a answered %d of 300 discovery requests at once, want about 50 (its burst)", fromA)
	}
	if d := exitA.SignalingStats().Dropped - dropped; d < 200 {
		t.Errorf("ann-a counted %d discovery requests dropped, want at least 200", d)
	}

	// An exit that closes leaves.
	if err := exitB.Close(ctx); err != nil {
		t.Fatal(err)
	}
	awaitAnnouncement(t, heardCh, 5*time.Second, "ann-b", "leaving", func(a *messages.ExitAnnouncement) bool { return a.State == messages.ExitLeaving })
}

func randomNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// askExits publishes n discovery requests with one reply inbox and reads the answers until quiet
// for within (or until want have come, if want > 0); each answer is checked to be signed after the
// first request went out.
func askExits(t testing.TB, nc *nats.Conn, n, want int, within time.Duration) []announceHeard {
	t.Helper()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	data, err := signaling.Encode(messages.TypeExitsDiscover, &messages.ExitsDiscover{Nonce: randomNonce()})
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now().Add(-10 * time.Millisecond) // the exits' clock is ours; ms truncation
	for range n {
		if err := nc.PublishRequest(signaling.DiscoverSubject, inbox, data); err != nil {
			t.Fatal(err)
		}
	}
	var out []announceHeard
	for want <= 0 || len(out) < want {
		m, err := sub.NextMsg(within)
		if err != nil {
			return out
		}
		h := readAnnouncement(m.Data)
		if h.err == nil && time.UnixMilli(h.a.Timestamp).Before(asked) {
			t.Errorf("discovery answer from %s signed at %v, before the request (%v): not fresh",
				h.a.ExitID, time.UnixMilli(h.a.Timestamp), asked)
		}
		out = append(out, h)
	}
	return out
}
