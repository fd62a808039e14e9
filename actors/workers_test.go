package actors

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"
)

// workersOf counts the goroutines running Workers.work.
func workersOf(t *testing.T) int {
	t.Helper()
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "actors.(*Workers).work")
}

// waitIdle waits until w has exactly n workers, all of them waiting, or fails the test after 5 s.
func waitIdle(t *testing.T, w *Workers, n int, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for workersOf(t) != n || w.idle.Load() != int32(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d workers, %d waiting; want %d of each", when, workersOf(t), w.idle.Load(), n)
		}
		runtime.Gosched()
	}
}

// TestWorkersKeepAtMostMaxIdle: maxIdle workers wait from the start; a burst of tasks that all
// wait at once needs one goroutine each;
// once they are done, maxIdle of them stay for later tasks and the rest exit; Close lets those go
// and waits for them; a task scheduled after Close still runs.
func TestWorkersKeepAtMostMaxIdle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const burst, maxIdle = 12, 3
	w := NewWorkers(maxIdle)
	defer w.Close() // before goleak's check, should the test fail early
	waitIdle(t, w, maxIdle, "once made")
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(burst)
	done.Add(burst)
	for range burst {
		w.Schedule(func() { started.Done(); <-release; done.Done() })
	}
	started.Wait() // all at once: no task waited for another to finish
	if got := workersOf(t); got != burst {
		t.Fatalf("%d workers run a burst of %d tasks, want one each", got, burst)
	}
	close(release)
	done.Wait()
	waitIdle(t, w, maxIdle, "after the burst")

	// An idle worker takes the next task: no goroutine is added.
	ran := make(chan int, 1)
	w.Schedule(func() { ran <- workersOf(t) })
	if got := <-ran; got != maxIdle {
		t.Fatalf("a task on an idle worker ran among %d workers, want %d", got, maxIdle)
	}

	w.Close()
	if got := workersOf(t); got != 0 {
		t.Fatalf("%d workers after Close", got)
	}
	w.Close() // idempotent
	after := make(chan struct{})
	w.Schedule(func() { close(after) })
	select {
	case <-after:
	case <-time.After(5 * time.Second):
		t.Fatal("a task scheduled after Close did not run")
	}
}

// runsOn is an actor that reports whether its Receive ran on a worker.
type runsOn struct{ onWorker chan<- bool }

func (a *runsOn) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		buf := make([]byte, 64<<10)
		a.onWorker <- strings.Contains(string(buf[:runtime.Stack(buf, false)]), "actors.(*Workers).work")
	}
}

// TestActorsRunOnTheirSystemsWorkers: with Workers registered, this package's actors (and their
// children) run on them; in a system without, on protoactor's own goroutines.
func TestActorsRunOnTheirSystemsWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, withWorkers := range []bool{true, false} {
		sys := actor.NewActorSystem()
		var w *Workers
		if withWorkers {
			w = NewWorkers(2)
			w.Register(sys)
		}
		onWorker := make(chan bool, 1)
		pid := sys.Root.Spawn(props(func() actor.Actor { return &runsOn{onWorker: onWorker} }))
		if got := <-onWorker; got != withWorkers {
			t.Errorf("with workers %v: Receive ran on a worker: %v", withWorkers, got)
		}
		if err := sys.Root.StopFuture(pid).Wait(); err != nil {
			t.Fatal(err)
		}
		sys.Shutdown()
		if w != nil {
			w.Close()
		}
	}
}
