package actors

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"
)

// workersOf counts the goroutines in Workers.work: all of them, and those waiting for a task
// (parked in its select, no task's frames above it).
func workersOf(t *testing.T) (all, waiting int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !strings.Contains(g, "actors.(*Workers).work(") {
			continue
		}
		all++
		header, frames, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[select") && !strings.Contains(frames, "workers_test.go") {
			waiting++
		}
	}
	return all, waiting
}

// waitWorkers waits until w has exactly n workers, all of them waiting for a task, or fails the
// test after 5 s.
func waitWorkers(t *testing.T, w *Workers, n int, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, waiting := workersOf(t)
		if all == n && waiting == n && w.idle.Load() == int32(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d workers, %d of them waiting (%d counted idle); want %d", when, all, waiting, w.idle.Load(), n)
		}
		runtime.Gosched()
	}
}

// TestWorkersKeepAtMostMaxIdle: maxIdle workers wait from the start; a burst of tasks that all
// wait at once needs one goroutine each; once they are done, maxIdle of them stay for later tasks
// and the rest exit; Close lets those go and waits for them; a task scheduled after Close still
// runs.
func TestWorkersKeepAtMostMaxIdle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const burst, maxIdle = 12, 3
	w := NewWorkers(maxIdle)
	defer func() { _ = w.Close(context.Background()) }() // after the release below, should the test fail early
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseAll()
	waitWorkers(t, w, maxIdle, "once made")

	var started, done sync.WaitGroup
	started.Add(burst)
	done.Add(burst)
	for range burst {
		w.Schedule(func() { started.Done(); <-release; done.Done() })
	}
	started.Wait() // all at once: no task waited for another to finish
	if all, _ := workersOf(t); all < burst {
		t.Fatalf("%d workers run a burst of %d tasks, want one each", all, burst)
	}
	releaseAll()
	done.Wait()
	waitWorkers(t, w, maxIdle, "after the burst")

	// A waiting worker takes the next task: no goroutine is added.
	ran := make(chan int, 1)
	w.Schedule(func() { all, _ := workersOf(t); ran <- all })
	if got := <-ran; got != maxIdle {
		t.Fatalf("a task on a waiting worker ran among %d workers, want %d", got, maxIdle)
	}

	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(context.Background()); err != nil { // idempotent
		t.Fatalf("second Close: %v", err)
	}
	after := make(chan struct{})
	w.Schedule(func() { close(after) })
	select {
	case <-after:
	case <-time.After(5 * time.Second):
		t.Fatal("a task scheduled after Close did not run")
	}
}

// TestWorkersCloseIsBounded: a task that outlives Close's ctx makes Close return ErrWorkersBusy
// instead of waiting for it; the worker exits once its task ends.
func TestWorkersCloseIsBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	w := NewWorkers(1)
	release, ended := make(chan struct{}), make(chan struct{})
	w.Schedule(func() { <-release; close(ended) })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); !errors.Is(err, ErrWorkersBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a task running past its ctx: %v, want ErrWorkersBusy and the deadline", err)
	}
	close(release)
	<-ended
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("Close once the task ended: %v", err)
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

// TestActorsRunOnTheirSystemsWorkers: with Workers registered, this package's actors run on them;
// in a system without, on protoactor's own goroutines — even when spawned from the same Props,
// which the spawn leaves as they were.
func TestActorsRunOnTheirSystemsWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	onWorker := make(chan bool, 1)
	shared := props(func() actor.Actor { return &runsOn{onWorker: onWorker} })
	for _, withWorkers := range []bool{true, false} {
		sys := actor.NewActorSystem()
		var w *Workers
		if withWorkers {
			w = NewWorkers(2)
			w.Register(sys)
		}
		pid := sys.Root.Spawn(shared)
		if got := <-onWorker; got != withWorkers {
			t.Errorf("with workers %v: Receive ran on a worker: %v", withWorkers, got)
		}
		if err := sys.Root.StopFuture(pid).Wait(); err != nil {
			t.Fatal(err)
		}
		sys.Shutdown()
		if w != nil {
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}
