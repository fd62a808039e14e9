package device

import (
	"sync"
	"testing"
	"time"
)

// TestWaitPoolCapAndClose (Warren): a capped pool makes the Get past its cap wait for a Put; Close
// lets a waiting Get, and every later one, go ahead.
func TestWaitPoolCapAndClose(t *testing.T) {
	p := newWaitPoolOn(&sync.Pool{New: func() any { return new(int) }}, 1)
	first := p.Get()
	got := make(chan any, 2)
	go func() { got <- p.Get() }()
	select {
	case <-got:
		t.Fatal("a Get past the cap did not wait")
	case <-time.After(50 * time.Millisecond): // the span in which it must not return
	}
	p.Put(first)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a Put did not release the waiting Get")
	}
	go func() { got <- p.Get() }() // past the cap again: waits
	p.Close()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the waiting Get")
	}
	if p.Get() == nil {
		t.Fatal("Get after Close returned nothing")
	}
}
