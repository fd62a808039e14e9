package test

// Admission and replay: replayed requests, allowed clients, bursts of clients, and floods on an
// exit's subject.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// TestReplayedRequestsAreRefused: a captured session request replayed — while its session is
// open, and after its client said goodbye — is refused "replayed" and changes nothing on the exit.
func TestReplayedRequestsAreRefused(t *testing.T) {
	ns := startNATS(t, nil)
	_, exitSeed := newIdentitySeed(t)
	bus := engine.NATSConfig{URLs: []string{ns.URL()}}
	x := startSecureEngine(t, engine.Config{NATS: bus, Identity: exitSeed,
		Exit: &engine.ExitConfig{ID: "replay", Listen: "127.0.0.1:0", Open: true}})
	client := startSecureEngine(t, engine.Config{NATS: bus})
	evil := newAttacker(t, ns.URL())
	capturedCh := make(chan []byte, 16)
	sub, err := evil.nc.Subscribe(signaling.ExitSubject("replay"), func(m *nats.Msg) {
		if body, err := signaling.Decode(m.Data); err == nil {
			if _, ok := body.(*messages.SessionRequest); ok {
				capturedCh <- m.Data
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = evil.nc.Flush()
	before := exitStatus(t, x)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "replay", Pins: map[string]string{"replay": x.ClientID()}})
	captured := testutil.Await(t, capturedCh, 5*time.Second, "the attacker to see a request")
	// The tunnel's first probe is a flow on the exit until its end reaches the session: wait for it.
	waitFor(t, 5*time.Second, "the open probe to end on the exit", func() bool { return exitStatus(t, x).Flows == 0 })
	open := exitStatus(t, x)
	expectReplayed := func(when string) {
		t.Helper()
		body, err := evil.request("replay", captured)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		e, ok := body.(*messages.ErrorResponse)
		if !ok || e.Code != messages.ErrCodeReplayed {
			t.Fatalf("%s: replay answered %#v", when, body)
		}
		if err := signaling.VerifyError(e, time.Now()); err != nil || e.Signer != x.ClientID() {
			t.Fatalf("%s: refusal not signed by the exit: %v", when, err)
		}
	}
	expectReplayed("while open")
	if st := exitStatus(t, x); st != open {
		t.Fatalf("a replay changed the exit: %+v → %+v", open, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the session to be released", func() bool { return exitStatus(t, x).Sessions == before.Sessions })
	expectReplayed("after goodbye")
	if st := exitStatus(t, x); st.Sessions != before.Sessions || st.AddressesUsed != before.AddressesUsed {
		t.Fatalf("after the replays: %+v, before %+v", st, before)
	}
	if n := x.SignalingStats().Replayed; n != 2 {
		t.Fatalf("replays counted %d, want 2", n)
	}
}

// TestAdmissionLimits: an exit that admits only its allowed clients refuses a flood of signed
// requests from fresh identities without spending an address; one identity cannot hold more than
// max_sessions_per_client sessions, nor request faster than its budget.
func TestAdmissionLimits(t *testing.T) {
	ns := startNATS(t, nil)
	bus := engine.NATSConfig{URLs: []string{ns.URL()}}
	legitID, legitSeed := newIdentitySeed(t)
	_, exitSeed := newIdentitySeed(t)
	x := startSecureEngine(t, engine.Config{NATS: bus, Identity: exitSeed,
		Exit: &engine.ExitConfig{ID: "guarded", Listen: "127.0.0.1:0", AllowedClients: []string{legitID.ID()}}})
	evil := newAttacker(t, ns.URL())
	before := exitStatus(t, x)
	const flood = 300
	var forbidden int
	for range flood {
		fresh, _ := newIdentitySeed(t)
		data, _ := signaling.Encode(messages.TypeSessionRequest, signedRequest(t, fresh, "guarded"))
		body, err := evil.request("guarded", data)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := body.(*messages.ErrorResponse); ok && e.Code == messages.ErrCodeForbidden {
			forbidden++
		}
	}
	if st := exitStatus(t, x); forbidden != flood || st != before {
		t.Fatalf("flood of %d: %d forbidden; exit %+v, before %+v", flood, forbidden, st, before)
	}
	legit := startSecureEngine(t, engine.Config{NATS: bus, Identity: legitSeed})
	openTunnelSpec(t, legit, engine.TunnelSpec{Exit: "guarded", Pins: map[string]string{"guarded": x.ClientID()}})

	// An open exit with per-client limits.
	_, openSeed := newIdentitySeed(t)
	y := startSecureEngine(t, engine.Config{NATS: bus, Identity: openSeed,
		Exit: &engine.ExitConfig{ID: "limited", Listen: "127.0.0.1:0", Open: true, MaxSessionsPerClient: 3, RequestsPerSecond: 2, RequestBurst: 5}})
	codes := map[string]int{}
	for range 8 {
		data, _ := signaling.Encode(messages.TypeSessionRequest, signedRequest(t, evil.id, "limited"))
		body, err := evil.request("limited", data)
		if err != nil {
			t.Fatal(err)
		}
		switch b := body.(type) {
		case *messages.SessionResponse:
			codes["granted"]++
		case *messages.ErrorResponse:
			codes[b.Code]++
		}
	}
	// Burst 5: five requests pass the rate budget, of which three get sessions; the other three
	// are over the rate ("unavailable": retry later).
	if codes["granted"] != 3 || codes[messages.ErrCodeLimited] != 2 || codes[messages.ErrCodeUnavailable] != 3 {
		t.Fatalf("one identity's 8 requests: %v, want 3 granted, 2 limited, 3 unavailable", codes)
	}
	if st := exitStatus(t, y); st.Sessions != 3 || st.Clients != 1 {
		t.Fatalf("exit after the limits: %+v", st)
	}
}

// TestBurstOfClientsAllGetSessions: 400 clients ask one exit for a session at the same moment;
// the requests beyond what the exit handles at once wait their turn, and every client gets a
// signed session.
func TestBurstOfClientsAllGetSessions(t *testing.T) {
	ns := startNATS(t, nil)
	_, exitSeed := newIdentitySeed(t)
	x := startSecureEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}}, Identity: exitSeed,
		Exit: &engine.ExitConfig{ID: "busy", Listen: "127.0.0.1:0", Open: true}})
	const clients = 400
	reqs := make([][]byte, clients)
	for i := range reqs {
		id, _ := newIdentitySeed(t)
		reqs[i], _ = signaling.Encode(messages.TypeSessionRequest, signedRequest(t, id, "busy"))
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var granted, other atomic.Int64
	var wg sync.WaitGroup
	for _, data := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := nc.Request(signaling.ExitSubject("busy"), data, 30*time.Second)
			if err == nil {
				if body, err := signaling.Decode(msg.Data); err == nil {
					if r, ok := body.(*messages.SessionResponse); ok && signaling.VerifySessionResponse(r, time.Now()) == nil && r.ExitIdentity == x.ClientID() {
						granted.Add(1)
						return
					}
				}
			}
			other.Add(1)
		}()
	}
	wg.Wait()
	if granted.Load() != clients {
		t.Fatalf("%d of %d clients got a session (%d did not)", granted.Load(), clients, other.Load())
	}
	if st := exitStatus(t, x); st.Sessions != clients || st.Clients != clients {
		t.Fatalf("exit: %+v", st)
	}
}

// TestFloodOnTheExitSubject: a party on the bus publishes 50,000 junk messages to an exit's
// subject as fast as it can. What waits for the exit is bounded (the rest is dropped and counted,
// not queued without end), and once the flood is over a genuine tunnel opens and carries data.
func TestFloodOnTheExitSubject(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	ns := startNATS(t, nil)
	_, exitSeed := newIdentitySeed(t)
	bus := engine.NATSConfig{URLs: []string{ns.URL()}}
	x := startSecureEngine(t, engine.Config{NATS: bus, Identity: exitSeed,
		Exit: &engine.ExitConfig{ID: "flooded", Listen: "127.0.0.1:0", Open: true, Egress: engine.EgressConfig{AllowLoopback: true}}})
	evil := newAttacker(t, ns.URL())
	junk := []byte(`{"v":1,"type":"sessions.ping","body":{}}`)
	for range 50_000 {
		if err := evil.nc.Publish(signaling.ExitSubject("flooded"), junk); err != nil {
			t.Fatal(err)
		}
	}
	if err := evil.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The flood outruns the exit: some of it is dropped at the backlog bound (or by NATS).
	waitFor(t, 30*time.Second, "the flood to be bounded", func() bool {
		st := x.SignalingStats()
		return st.Dropped+st.SlowConsumer > 0
	})
	// The exit answers in order: once it answers a request sent after the flood, the flood is
	// behind it. (A request that arrives while the backlog is full is dropped unanswered.)
	waitFor(t, 30*time.Second, "the exit to answer again", func() bool {
		_, err := evil.nc.Request(signaling.ExitSubject("flooded"), junk, time.Second)
		return err == nil
	})
	st := x.SignalingStats()
	t.Logf("flood of 50000: refused %d, dropped at the backlog %d, NATS slow-consumer reports %d", st.Refused, st.Dropped, st.SlowConsumer)
	client := startSecureEngine(t, engine.Config{NATS: bus})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "flooded", Pins: map[string]string{"flooded": x.ClientID()}})
	if err := download(socksClient(t, tun), srv.URL, 97, 256<<10); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
}
