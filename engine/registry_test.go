package engine

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// TestCompactRegistry: the compacted registry still holds the processes the actor system
// registered (a message to a stopped actor still reaches dead letters, so a request to it fails
// at once with ErrDeadLetter), and actors spawned afterwards are found and removed.
func TestCompactRegistry(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	compactRegistry(sys)
	if n := len(sys.ProcessRegistry.LocalPIDs.LocalPIDs); n != registryBuckets {
		t.Fatalf("%d buckets, want %d", n, registryBuckets)
	}
	for _, id := range []string{"deadletter", "eventstream"} {
		if _, ok := sys.ProcessRegistry.GetLocal(id); !ok {
			t.Fatalf("%s not in the compacted registry", id)
		}
	}
	echo := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if s, ok := c.Message().(string); ok {
			c.Respond(s)
		}
	}))
	if res, err := sys.Root.RequestFuture(echo, "ping", 5*time.Second).Result(); err != nil || res != "ping" {
		t.Fatalf("request to a spawned actor: %v, %v", res, err)
	}
	if err := sys.Root.StopFuture(echo).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Root.RequestFuture(echo, "ping", 5*time.Second).Result(); !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("request to a stopped actor: %v, want %v", err, actor.ErrDeadLetter)
	}
	if n := registered(sys); n != 2 {
		t.Fatalf("%d processes registered after the actor and the futures ended, want 2 (dead letters, the event stream)", n)
	}
}

func registered(sys *actor.ActorSystem) int {
	n := 0
	for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		n += m.Count()
	}
	return n
}
