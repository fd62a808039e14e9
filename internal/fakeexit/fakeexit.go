// Package fakeexit stands in for exits on a NATS bus in tests of the exit directory: real NATS
// clients with their own identities that publish genuine signed announcements and answer discovery,
// without a data plane. (Apart from internal/testutil, which signaling's own tests import.)
package fakeexit

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// Exit is a stand-in for an exit on the bus: a plain NATS client with its own identity that
// publishes genuine signed announcements (and answers discovery requests if asked to). Its
// timestamps strictly increase, so two announcements in one millisecond are not taken for a replay
// of each other.
type Exit struct {
	t        testing.TB
	nc       *nats.Conn
	ID       string
	Identity *signaling.Identity
	Cert     string // its operator certificate, if any
	Endpoint string
	Labels   map[string]string
	Interval time.Duration
	now      atomic.Pointer[exitNow] // what a discovery answer says
	lastTS   atomic.Int64
	wg       sync.WaitGroup
	closed   chan struct{} // at the test's end: announcing goroutines return
}

type exitNow struct {
	state string
	load  messages.ExitLoad
}

// New connects to natsURL as exit id with a fresh identity, a 10 s cadence and
// label region=test; it is closed at the test's end.
func New(t testing.TB, natsURL, id string) *Exit {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := signaling.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	x := &Exit{t: t, nc: nc, ID: id, Identity: ident, Endpoint: "127.0.0.1:51820",
		Labels: map[string]string{"region": "test"}, Interval: 10 * time.Second, closed: make(chan struct{})}
	x.now.Store(&exitNow{state: messages.ExitServing})
	t.Cleanup(func() {
		close(x.closed)
		nc.Close()
		x.wg.Wait()
	})
	return x
}

// Conn is the exit's NATS connection.
func (x *Exit) Conn() *nats.Conn { return x.nc }

// Announcement is a signed announcement in state with load, timestamped now (or just after the
// last one). It also becomes what the exit answers discovery with.
func (x *Exit) Announcement(state string, load messages.ExitLoad) *messages.ExitAnnouncement {
	x.now.Store(&exitNow{state: state, load: load})
	a := &messages.ExitAnnouncement{ExitID: x.ID, Certificate: x.Cert, Endpoint: x.Endpoint, Labels: x.Labels,
		Capacity: 100, Load: load, State: state, Version: "test", IntervalMS: x.Interval.Milliseconds()}
	now := time.Now()
	for {
		last := x.lastTS.Load()
		if ts := max(now.UnixMilli(), last+1); x.lastTS.CompareAndSwap(last, ts) {
			x.Identity.SignExitAnnouncement(a, time.UnixMilli(ts))
			return a
		}
	}
}

// Announce publishes a fresh announcement in state with load on signaling.AnnounceSubject, and
// returns it (to replay later).
func (x *Exit) Announce(state string, load messages.ExitLoad) *messages.ExitAnnouncement {
	a := x.Announcement(state, load)
	x.Publish(signaling.AnnounceSubject, a)
	return a
}

// Publish sends a, as it is, to subject, and flushes.
func (x *Exit) Publish(subject string, a *messages.ExitAnnouncement) {
	data, err := signaling.Encode(messages.TypeExitAnnouncement, a)
	if err == nil {
		err = x.nc.Publish(subject, data)
	}
	if err == nil {
		err = x.nc.Flush()
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		x.t.Errorf("exit %s: publish: %v", x.ID, err)
	}
}

// AnswerDiscovery answers every exits.discover request with a fresh announcement of the exit's
// current state; it counts the requests it answered in answered (may be nil).
func (x *Exit) AnswerDiscovery(answered *atomic.Int64) {
	x.t.Helper()
	_, err := x.nc.Subscribe(signaling.DiscoverSubject, func(m *nats.Msg) {
		if _, err := signaling.Decode(m.Data); err != nil || m.Reply == "" {
			return
		}
		if answered != nil {
			answered.Add(1)
		}
		cur := x.now.Load()
		x.Publish(m.Reply, x.Announcement(cur.state, cur.load))
	})
	if err == nil {
		err = x.nc.Flush()
	}
	if err != nil {
		x.t.Fatalf("exit %s: answer discovery: %v", x.ID, err)
	}
}

// AnnounceEvery announces the exit's current state every Interval until the returned stop is
// called; stop waits for the announcing goroutine.
func (x *Exit) AnnounceEvery() (stop func()) {
	done := make(chan struct{})
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		tick := time.NewTicker(x.Interval)
		defer tick.Stop()
		for {
			cur := x.now.Load()
			x.Announce(cur.state, cur.load)
			select {
			case <-tick.C:
			case <-done:
				return
			case <-x.closed:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		x.wg.Wait()
	}
}

// String names the exit in failures.
func (x *Exit) String() string {
	return fmt.Sprintf("exit %s (%s)", x.ID, x.Identity.ID()[:8])
}
