/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import (
	"sync"
	"testing"
)

// Warren: a queue's channel is closed by the Done that drops its last writer, exactly once, and
// not before; Add(0) changes nothing; a count below zero panics, as a WaitGroup's does.
func TestQueueWritersCloseOnLastDone(t *testing.T) {
	q := newHandshakeQueue(1)
	closed := func() bool {
		select {
		case _, ok := <-q.c:
			return !ok
		default:
			return false
		}
	}
	q.wg.Add(2) // two writers besides the device's own reference
	q.wg.Done()
	q.wg.Done()
	if closed() {
		t.Fatal("closed while the device still holds its reference")
	}
	q.wg.Add(0)
	q.wg.Done() // the device's reference: the last
	if !closed() {
		t.Fatal("not closed after the last Done")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a Done below zero did not panic")
		}
	}()
	q.wg.Done()
}

// Warren: many writers finishing at once close the channel once (a second close would panic), and
// a worker ranging over it sees everything they wrote.
func TestQueueWritersConcurrent(t *testing.T) {
	const writers, each = 8, 100
	q := newOutboundQueue()
	q.wg.Add(writers)
	var start sync.WaitGroup
	start.Add(1)
	for i := 0; i < writers; i++ {
		go func() {
			defer q.wg.Done()
			start.Wait()
			for j := 0; j < each; j++ {
				q.c <- nil
			}
		}()
	}
	got := make(chan int)
	go func() {
		n := 0
		for range q.c {
			n++
		}
		got <- n
	}()
	start.Done()
	q.wg.Done() // the device's reference
	if n := <-got; n != writers*each {
		t.Fatalf("worker read %d elements, want %d", n, writers*each)
	}
}
