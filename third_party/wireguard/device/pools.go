/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import (
	"sync"
)

type WaitPool struct {
	pool   *sync.Pool // Warren: may be shared by several WaitPools (sharedPools)
	cond   sync.Cond
	lock   sync.Mutex
	count  uint32 // Get calls not yet Put back
	max    uint32
	closed bool // Warren: Close was called; Get no longer waits
}

func NewWaitPool(max uint32, new func() any) *WaitPool {
	return newWaitPoolOn(&sync.Pool{New: new}, max)
}

// newWaitPoolOn counts (and, with max > 0, caps) what is taken from pool (Warren).
func newWaitPoolOn(pool *sync.Pool, max uint32) *WaitPool {
	p := &WaitPool{pool: pool, max: max}
	p.cond = sync.Cond{L: &p.lock}
	return p
}

func (p *WaitPool) Get() any {
	if p.max != 0 {
		p.lock.Lock()
		for p.count >= p.max && !p.closed {
			p.cond.Wait()
		}
		p.count++
		p.lock.Unlock()
	}
	return p.pool.Get()
}

// Close ends the cap (Warren): a Get that waits for a buffer to come back, and every later one,
// goes ahead. Device.Close calls it first, so that no reader of the device stays blocked on buffers
// held by what the close itself releases later (packets staged for a peer are freed when the peers
// are removed, after the bind's receive loop has been waited for).
func (p *WaitPool) Close() {
	p.lock.Lock()
	p.closed = true
	p.lock.Unlock()
	p.cond.Broadcast()
}

func (p *WaitPool) Put(x any) {
	p.pool.Put(x)
	if p.max == 0 {
		return
	}
	p.lock.Lock()
	defer p.lock.Unlock()
	p.count--
	p.cond.Signal()
}

// Warren: message buffers and queue elements come from pools shared by every device of the
// process, not one set of pools per device; each device still counts (and with
// DeviceOptions.MaxBuffers caps) what it holds. A device that sends a packet every few seconds (an
// idle tunnel's keepalive or probe) would otherwise find its own pool emptied by the GC each time
// and allocate and zero a fresh buffer per packet; shared, the buffers that a thousand such devices
// pass around stay in use.
var sharedPools = struct {
	messageBuffers, inboundElements, outboundElements sync.Pool
}{
	messageBuffers:   sync.Pool{New: func() any { return new([MaxMessageSize]byte) }},
	inboundElements:  sync.Pool{New: func() any { return new(QueueInboundElement) }},
	outboundElements: sync.Pool{New: func() any { return new(QueueOutboundElement) }},
}

func (device *Device) PopulatePools() {
	device.pool.inboundElementsContainer = NewWaitPool(PreallocatedBuffersPerPool, func() any {
		s := make([]*QueueInboundElement, 0, device.BatchSize())
		return &QueueInboundElementsContainer{elems: s}
	})
	device.pool.outboundElementsContainer = NewWaitPool(PreallocatedBuffersPerPool, func() any {
		s := make([]*QueueOutboundElement, 0, device.BatchSize())
		return &QueueOutboundElementsContainer{elems: s}
	})
	max := uint32(PreallocatedBuffersPerPool) // Warren: shared pools, capped per device (above)
	if device.opts.MaxBuffers > 0 {
		max = device.opts.MaxBuffers
	}
	device.pool.messageBuffers = newWaitPoolOn(&sharedPools.messageBuffers, max)
	device.pool.inboundElements = newWaitPoolOn(&sharedPools.inboundElements, max)
	device.pool.outboundElements = newWaitPoolOn(&sharedPools.outboundElements, max)
}

func (device *Device) GetInboundElementsContainer() *QueueInboundElementsContainer {
	c := device.pool.inboundElementsContainer.Get().(*QueueInboundElementsContainer)
	c.Mutex = sync.Mutex{}
	return c
}

func (device *Device) PutInboundElementsContainer(c *QueueInboundElementsContainer) {
	for i := range c.elems {
		c.elems[i] = nil
	}
	c.elems = c.elems[:0]
	device.pool.inboundElementsContainer.Put(c)
}

func (device *Device) GetOutboundElementsContainer() *QueueOutboundElementsContainer {
	c := device.pool.outboundElementsContainer.Get().(*QueueOutboundElementsContainer)
	c.Mutex = sync.Mutex{}
	return c
}

func (device *Device) PutOutboundElementsContainer(c *QueueOutboundElementsContainer) {
	for i := range c.elems {
		c.elems[i] = nil
	}
	c.elems = c.elems[:0]
	device.pool.outboundElementsContainer.Put(c)
}

func (device *Device) GetMessageBuffer() *[MaxMessageSize]byte {
	return device.pool.messageBuffers.Get().(*[MaxMessageSize]byte)
}

func (device *Device) PutMessageBuffer(msg *[MaxMessageSize]byte) {
	device.pool.messageBuffers.Put(msg)
}

func (device *Device) GetInboundElement() *QueueInboundElement {
	return device.pool.inboundElements.Get().(*QueueInboundElement)
}

func (device *Device) PutInboundElement(elem *QueueInboundElement) {
	elem.clearPointers()
	device.pool.inboundElements.Put(elem)
}

func (device *Device) GetOutboundElement() *QueueOutboundElement {
	return device.pool.outboundElements.Get().(*QueueOutboundElement)
}

func (device *Device) PutOutboundElement(elem *QueueOutboundElement) {
	elem.clearPointers()
	device.pool.outboundElements.Put(elem)
}
