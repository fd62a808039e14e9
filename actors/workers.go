package actors

// Workers: the goroutines that run an engine's mailboxes, kept between runs with their stacks.
//
// protoactor runs a mailbox that has messages in a new goroutine each time (its default
// dispatcher is `go fn()`). A new goroutine starts with a 2 KiB stack, and an actor's Receive is
// deep (mailbox, middlewares, behavior, handler, Spawn): the stack grew 2 → 4 → 8 → 16 KiB, one
// copy each time, at nearly every message. That was about a tenth of the CPU a proxied connection
// costs (BenchmarkConnectLatency's profile, docs/performance.md). Workers keep their grown stacks:
// a mailbox run goes to a worker that waits for one, or to a new goroutine that becomes a worker
// when it is done, while fewer than maxIdle wait. An engine keeps max(8, 4 × GOMAXPROCS) waiting,
// started with it: a fixed number at rest, which the tests that count goroutines rely on.
//
//	NewWorkers ──▶ maxIdle workers wait
//	Schedule ──a worker waits──▶ that worker runs it
//	   └── none waits ──▶ a new goroutine runs it, then waits for the next (or exits: maxIdle wait)
//	Close ──▶ the waiting workers exit; a running one exits after its task; Close waits for them all
//	          (bounded by its ctx: ErrWorkersBusy if a task outlives it)
//	Schedule after Close ──▶ a plain goroutine, as protoactor's own dispatcher
//
// The engine owns its Workers (one per actor system, registered as its extension): it closes them
// after its actor system has stopped. Actors of a system without Workers (package tests, a system
// made by an embedder) use protoactor's dispatcher.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/extensions"
)

// mailboxThroughput: messages a mailbox processes before it yields the CPU (protoactor's default).
const mailboxThroughput = 300

// Workers is an actor.Dispatcher whose goroutines outlive a mailbox run. Alive until Close.
type Workers struct {
	tasks   chan func()   // unbuffered: a send succeeds only when a worker waits
	done    chan struct{} // closed by Close
	maxIdle int32
	idle    atomic.Int32 // workers waiting for a task (a pool size, not lifecycle state)

	mu     sync.Mutex // orders starting a worker with Close
	closed bool
	wg     sync.WaitGroup // every worker
}

var _ actor.Dispatcher = (*Workers)(nil)

var workersID = extensions.NextExtensionID()

// NewWorkers returns Workers that keep maxIdle goroutines waiting (at least 1), started here: at
// rest an engine has exactly maxIdle of them, however many a burst needed.
func NewWorkers(maxIdle int) *Workers {
	w := &Workers{tasks: make(chan func()), done: make(chan struct{}), maxIdle: int32(max(maxIdle, 1))}
	w.wg.Add(int(w.maxIdle))
	for range w.maxIdle {
		go w.work(nil)
	}
	return w
}

// ExtensionID makes Workers an extension of the actor system they serve (Register).
func (w *Workers) ExtensionID() extensions.ExtensionID { return workersID }

// Register makes w the dispatcher of every actor spawned in sys with this package's props from now
// on. Call it before the first spawn.
func (w *Workers) Register(sys *actor.ActorSystem) { sys.Extensions.Register(w) }

// Throughput is protoactor's: messages per run before the mailbox yields.
func (w *Workers) Throughput() int { return mailboxThroughput }

// Schedule runs fn on a waiting worker, else on a new goroutine that then becomes one. It never
// blocks.
func (w *Workers) Schedule(fn func()) {
	select {
	case w.tasks <- fn:
		return
	default:
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		go fn()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go w.work(fn)
}

// work runs fn (if any), then each task it is given, until Close or until maxIdle others already
// wait.
func (w *Workers) work(fn func()) {
	defer w.wg.Done()
	for {
		if fn != nil {
			fn()
		}
		if w.idle.Add(1) > w.maxIdle {
			w.idle.Add(-1)
			return
		}
		select {
		case fn = <-w.tasks:
			w.idle.Add(-1)
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}

// ErrWorkersBusy: Close's wait ended with a task still running.
var ErrWorkersBusy = errors.New("actors: workers still running a task")

// Close lets the waiting workers go and waits for every worker, including one finishing its task,
// until ctx ends. Once the actor system has stopped, every actor has waited for the goroutines it
// started (a connection for its copy loops), so what is left is a mailbox run ending: short, as an
// actor never blocks in Receive. Only an actor system that did not stop in time leaves a task that
// outlives ctx; then Close returns ErrWorkersBusy and that worker exits when its task ends. Later
// Schedules start plain goroutines. Idempotent.
func (w *Workers) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
	w.mu.Unlock()
	all := make(chan struct{})
	go func() { w.wg.Wait(); close(all) }()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrWorkersBusy, ctx.Err())
	}
}

// spawnWith is the spawner of this package's props: an actor of a system with Workers runs on them.
// It spawns a copy of p with the system's dispatcher, never p itself: an embedder may spawn the
// same Props in several systems, at once.
func spawnWith(sys *actor.ActorSystem, id string, p *actor.Props, parent actor.SpawnerContext) (*actor.PID, error) {
	if w := workersIn(sys); w != nil {
		p = p.Clone(actor.WithDispatcher(w))
	}
	return actor.DefaultSpawner(sys, id, p, parent)
}

// workersIn is sys's Workers, or nil if it has none.
func workersIn(sys *actor.ActorSystem) *Workers {
	w, _ := sys.Extensions.Get(workersID).(*Workers)
	return w
}

// goOn runs fn on sys's Workers (a goroutine whose stack has grown already), or on a new goroutine
// if sys has none: a connection's setup and copy loops, whose dials, handshakes and relays are as
// deep as a Receive. Never blocks.
func goOn(sys *actor.ActorSystem, fn func()) {
	if w := workersIn(sys); w != nil {
		w.Schedule(fn)
		return
	}
	go fn()
}
