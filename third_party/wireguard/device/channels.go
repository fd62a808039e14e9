/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import (
	"runtime"
	"sync/atomic"
)

// An outboundQueue is a channel of QueueOutboundElements awaiting encryption.
// An outboundQueue is ref-counted using its wg field.
// An outboundQueue created with newOutboundQueue has one reference.
// Every additional writer must call wg.Add(1).
// Every completed writer must call wg.Done().
// When no further writers will be added,
// call wg.Done to remove the initial reference.
// When the refcount hits 0, the queue's channel is closed.
type outboundQueue struct {
	c  chan *QueueOutboundElementsContainer
	wg queueWriters // Warren: was a sync.WaitGroup waited on by a goroutine that closed c
}

func newOutboundQueue() *outboundQueue {
	q := &outboundQueue{
		c: make(chan *QueueOutboundElementsContainer, QueueOutboundSize),
	}
	q.wg.init(func() { close(q.c) }) // Warren: the last writer closes c; no goroutine
	return q
}

// A inboundQueue is similar to an outboundQueue; see those docs.
type inboundQueue struct {
	c  chan *QueueInboundElementsContainer
	wg queueWriters // Warren: see outboundQueue
}

func newInboundQueue() *inboundQueue {
	q := &inboundQueue{
		c: make(chan *QueueInboundElementsContainer, QueueInboundSize),
	}
	q.wg.init(func() { close(q.c) }) // Warren: see newOutboundQueue
	return q
}

// A handshakeQueue is similar to an outboundQueue; see those docs.
type handshakeQueue struct {
	c  chan QueueHandshakeElement
	wg queueWriters // Warren: see outboundQueue
}

func newHandshakeQueue(size int) *handshakeQueue { // Warren: the size is the device's (DeviceOptions)
	q := &handshakeQueue{
		c: make(chan QueueHandshakeElement, size),
	}
	q.wg.init(func() { close(q.c) }) // Warren: see newOutboundQueue
	return q
}

// queueWriters counts a queue's writers (Warren). Upstream each queue had a sync.WaitGroup and a
// goroutine that waited on it and then closed the channel: three goroutines per device, alive for
// the device's whole life. Now the writer whose Done brings the count to zero closes the channel
// itself. The rules are the WaitGroup's: the count starts at one (the device's own reference,
// dropped by Device.Close); Add for every writer before it starts, Done when it has written its
// last; no Add once the count has reached zero. So the channel is still closed exactly once,
// after every writer is done, and the workers still range over it until then.
type queueWriters struct {
	n     atomic.Int64
	close func() // closes the queue's channel; called once, by the Done that reaches zero
}

func (w *queueWriters) init(close func()) {
	w.close = close
	w.n.Store(1)
}

func (w *queueWriters) Add(delta int) {
	switch n := w.n.Add(int64(delta)); {
	case n < 0:
		panic("device: negative queue writer count")
	case n == 0 && delta < 0: // Add(0), like a WaitGroup's, changes nothing
		w.close()
	}
}

func (w *queueWriters) Done() { w.Add(-1) }

type autodrainingInboundQueue struct {
	c chan *QueueInboundElementsContainer
}

// newAutodrainingInboundQueue returns a channel that will be drained when it gets GC'd.
// It is useful in cases in which is it hard to manage the lifetime of the channel.
// The returned channel must not be closed. Senders should signal shutdown using
// some other means, such as sending a sentinel nil values.
func newAutodrainingInboundQueue(device *Device) *autodrainingInboundQueue {
	q := &autodrainingInboundQueue{
		c: make(chan *QueueInboundElementsContainer, QueueInboundSize),
	}
	runtime.SetFinalizer(q, device.flushInboundQueue)
	return q
}

func (device *Device) flushInboundQueue(q *autodrainingInboundQueue) {
	for {
		select {
		case elemsContainer := <-q.c:
			elemsContainer.Lock()
			for _, elem := range elemsContainer.elems {
				device.PutMessageBuffer(elem.buffer)
				device.PutInboundElement(elem)
			}
			device.PutInboundElementsContainer(elemsContainer)
		default:
			return
		}
	}
}

type autodrainingOutboundQueue struct {
	c chan *QueueOutboundElementsContainer
}

// newAutodrainingOutboundQueue returns a channel that will be drained when it gets GC'd.
// It is useful in cases in which is it hard to manage the lifetime of the channel.
// The returned channel must not be closed. Senders should signal shutdown using
// some other means, such as sending a sentinel nil values.
// All sends to the channel must be best-effort, because there may be no receivers.
func newAutodrainingOutboundQueue(device *Device) *autodrainingOutboundQueue {
	q := &autodrainingOutboundQueue{
		c: make(chan *QueueOutboundElementsContainer, QueueOutboundSize),
	}
	runtime.SetFinalizer(q, device.flushOutboundQueue)
	return q
}

func (device *Device) flushOutboundQueue(q *autodrainingOutboundQueue) {
	for {
		select {
		case elemsContainer := <-q.c:
			elemsContainer.Lock()
			for _, elem := range elemsContainer.elems {
				device.PutMessageBuffer(elem.buffer)
				device.PutOutboundElement(elem)
			}
			device.PutOutboundElementsContainer(elemsContainer)
		default:
			return
		}
	}
}
