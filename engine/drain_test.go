package engine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDrainExitAPI: DrainExit before Start, on an engine without an exit, on an exit with nothing
// to drain (it stops at once, is not counted as lost, and the engine goes on), and again once
// drained.
func TestDrainExitAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.DrainExit(ctx); !errors.Is(err, ErrNotStarted) {
		t.Errorf("DrainExit before Start: %v, want ErrNotStarted", err)
	}
	client := startTestEngine(t, Config{})
	if err := client.DrainExit(ctx); !errors.Is(err, ErrNoExit) {
		t.Errorf("DrainExit without an exit: %v, want ErrNoExit", err)
	}
	e := startTestEngine(t, Config{Exit: &ExitConfig{ID: "x", Listen: "127.0.0.1:0"}})
	start := time.Now()
	if err := e.DrainExit(ctx); err != nil {
		t.Fatalf("DrainExit: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("an exit with nothing to drain took %v to stop", d)
	}
	if err := e.DrainExit(ctx); err != nil {
		t.Errorf("DrainExit again: %v, want nil", err)
	}
	if st, err := e.ExitStatus(ctx); err != nil || st != (ExitStatus{}) {
		t.Errorf("ExitStatus after the drain: %+v, %v; want zero", st, err)
	}
	if n := e.ChildrenLost(); n != 0 {
		t.Errorf("the drained exit was counted as lost (%d)", n)
	}
	if _, err := e.Stats(ctx); err != nil {
		t.Errorf("the engine after its exit drained: %v", err)
	}
	if err := e.Close(ctx); err != nil {
		t.Errorf("Close after the drain: %v", err)
	}
}
