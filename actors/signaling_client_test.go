package actors

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// signalingUnderTest runs the real signaling actor on a real in-process NATS server, and a plain
// NATS connection that plays the exit with whatever answers a test scripts.
func signalingUnderTest(t *testing.T) (*actor.ActorSystem, *actor.PID, *SignalingStats, *nats.Conn) {
	t.Helper()
	srv, err := signaling.StartEmbedded(signaling.EmbeddedOptions{Ready: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := signaling.NewIdentity()
	nc, err := signaling.Connect(signaling.ConnectOptions{InProcess: srv, Name: "client", Timeout: 5 * time.Second, Logger: orDiscard(nil),
		InboxPrefix: "_INBOX." + client.ID()})
	if err != nil {
		t.Fatal(err)
	}
	exit, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	stats := &SignalingStats{}
	pid := system.Root.Spawn(NewSignalingProps(SignalingConfig{Conn: nc, Server: srv, ClientID: client.ID(), Identity: client, Stats: stats}))
	t.Cleanup(func() {
		exit.Close()
		_ = system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	})
	return system, pid, stats, exit
}

// TestPongChecks: a pong counts only if the sessions' exit signed it for this ping (nonce), this
// exit id and this client, and names only sessions that were asked. Each near-miss is dropped and
// counted, and the genuine pong that follows is the answer.
func TestPongChecks(t *testing.T) {
	system, pid, stats, exitConn := signalingUnderTest(t)
	exitID, _ := signaling.NewIdentity()
	other, _ := signaling.NewIdentity()
	sub, err := exitConn.Subscribe(signaling.ExitSubject("exit-a"), func(m *nats.Msg) {
		body, err := signaling.Decode(m.Data)
		p, ok := body.(*messages.SessionsPing)
		if err != nil || !ok {
			return
		}
		send := func(signer *signaling.Identity, mutate func(*messages.SessionsPong)) {
			pong := &messages.SessionsPong{Nonce: p.Nonce, ExitID: "exit-a", ClientID: p.ClientID, Known: []string{}}
			mutate(pong)
			signer.SignSessionsPong(pong, time.Now())
			data, _ := signaling.Encode(messages.TypeSessionsPong, pong)
			_ = exitConn.Publish(m.Reply, data)
		}
		send(exitID, func(q *messages.SessionsPong) { q.ExitID = "exit-b" })                                    // another exit of the same identity
		send(exitID, func(q *messages.SessionsPong) { q.ClientID = other.ID() })                                // an answer to someone else's ping
		send(exitID, func(q *messages.SessionsPong) { q.Nonce = "00" + q.Nonce[2:] })                           // an earlier ping's
		send(other, func(*messages.SessionsPong) {})                                                            // not the sessions' exit
		send(exitID, func(q *messages.SessionsPong) { q.Known = []string{"fedcba9876543210fedcba9876543210"} }) // a session not asked
		unsigned, _ := signaling.Encode(messages.TypeError, &messages.ErrorResponse{Code: messages.ErrCodeForbidden})
		_ = exitConn.Publish(m.Reply, unsigned)                                     // an unsigned refusal
		send(exitID, func(q *messages.SessionsPong) { q.Known = p.SessionIDs[:1] }) // the genuine answer
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = exitConn.Flush()
	held, gone := "0123456789abcdef0123456789abcdef", "00112233445566778899aabbccddeeff"
	res, err := system.Root.RequestFuture(pid, &pingSessions{exitID: "exit-a", sessionIDs: []string{held, gone},
		exitIdentity: exitID.ID(), timeout: 5 * time.Second}, 6*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*pingReply)
	if r.err != nil || !r.known[held] || r.known[gone] || len(r.known) != 1 {
		t.Fatalf("ping answered %+v, want the genuine answer: %s held, %s gone", r, held, gone)
	}
	if f, u := stats.Forged.Load(), stats.Unsigned.Load(); f != 5 || u != 1 {
		t.Fatalf("dropped: %d forged, %d unsigned; want 5 and 1", f, u)
	}
}
