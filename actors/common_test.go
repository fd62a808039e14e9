package actors

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// childCount is how many children the parent in TestEndedChildrenAreCollected spawns and ends.
const childCount = 20

// heldChild is a child actor holding a buffer, as a tunnel holds its netstack and device.
type heldChild struct{ buf []byte }

func (*heldChild) Receive(actor.Context) {}

// endingParent spawns childCount children when started, stops them all on stopChildren and reports
// on ended once it has had the Terminated of each.
type endingParent struct {
	collected *atomic.Int32 // children the GC has freed
	ended     chan<- struct{}
	left      int
}

type stopChildren struct{}

func (p *endingParent) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		for range childCount {
			c := &heldChild{buf: make([]byte, 64<<10)}
			runtime.AddCleanup(c, func(n *atomic.Int32) { n.Add(1) }, p.collected)
			ctx.Spawn(props(func() actor.Actor { return c }))
		}
		p.left = childCount
	case *stopChildren:
		children := ctx.Children()
		for i := len(children) - 1; i >= 0; i-- { // in a mixed order: the last first, then the first
			ctx.Stop(children[(i*7)%len(children)])
		}
	case *actor.Terminated:
		if p.left--; p.left == 0 {
			p.ended <- struct{}{}
		}
	}
}

// A parent keeps nothing of the children that have ended (forgetEndedChildren): once all 20 have
// stopped, the GC frees each of them while the parent lives on. Without it, protoactor's set of
// children keeps the ended children's PIDs in its spare capacity, and through them the actors.
func TestEndedChildrenAreCollected(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	var collected atomic.Int32
	ended := make(chan struct{}, 1)
	parent := sys.Root.Spawn(props(func() actor.Actor { return &endingParent{collected: &collected, ended: ended} }))
	defer sys.Root.Stop(parent)
	sys.Root.Send(parent, &stopChildren{})
	testutil.Await(t, ended, 10*time.Second, "the Terminated of every child")
	testutil.Poll(t, 10*time.Second, "ended children freed by the GC", func(context.Context) (int32, error) {
		runtime.GC()
		return collected.Load(), nil
	}, func(n int32) bool { return n == childCount })
}
