/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package ratelimiter

import (
	"net/netip"
	"sync"
	"time"
)

const (
	packetsPerSecond   = 20
	packetsBurstable   = 5
	garbageCollectTime = time.Second
	packetCost         = 1000000000 / packetsPerSecond
	maxTokens          = packetCost * packetsBurstable
)

type RatelimiterEntry struct {
	mu       sync.Mutex
	lastTime time.Time
	tokens   int64
}

type Ratelimiter struct {
	mu      sync.RWMutex
	timeNow func() time.Time

	// Warren: the sweeper runs only while the table has entries. Upstream one goroutine per
	// limiter (per device) lived from Init to Close, its ticker stopped while the table was empty;
	// a limiter only gets entries when its device is under load (a handshake flood).
	stopSweep chan struct{} // closed to stop the running sweeper; nil while none runs
	closed    bool          // set by Close: no sweeper starts again until Init
	sweepers  sync.WaitGroup
	table     map[netip.Addr]*RatelimiterEntry
}

func (rate *Ratelimiter) Close() {
	rate.mu.Lock()
	rate.stopSweeperLocked() // Warren: the sweeper, if one runs
	rate.closed = true
	rate.mu.Unlock()
	rate.sweepers.Wait() // Warren: it has ended when Close returns (it takes mu to sweep)
}

func (rate *Ratelimiter) Init() {
	rate.mu.Lock()
	defer rate.mu.Unlock()

	if rate.timeNow == nil {
		rate.timeNow = time.Now
	}

	// stop any ongoing garbage collection routine
	rate.stopSweeperLocked() // Warren: the next new entry starts one (Allow)
	rate.closed = false

	rate.table = make(map[netip.Addr]*RatelimiterEntry)
}

// stopSweeperLocked stops the sweeper if one runs (Warren).
func (rate *Ratelimiter) stopSweeperLocked() {
	if rate.stopSweep != nil {
		close(rate.stopSweep)
		rate.stopSweep = nil
	}
}

// sweep removes stale entries every garbageCollectTime until the table is empty or stop is
// closed (Warren: started by Allow when the table gets its first entry).
func (rate *Ratelimiter) sweep(stop chan struct{}) {
	defer rate.sweepers.Done()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			if rate.cleanup(stop) {
				return
			}
		}
	}
}

// cleanup removes stale entries. It reports whether the sweeper given stop is to end: its table is
// empty (it is then no longer the running sweeper) or it has been stopped (Warren).
func (rate *Ratelimiter) cleanup(stop chan struct{}) (done bool) {
	rate.mu.Lock()
	defer rate.mu.Unlock()

	if rate.stopSweep != stop { // Warren: stopped by Close or Init, maybe with a new table
		return true
	}

	for key, entry := range rate.table {
		entry.mu.Lock()
		if rate.timeNow().Sub(entry.lastTime) > garbageCollectTime {
			delete(rate.table, key)
		}
		entry.mu.Unlock()
	}

	if len(rate.table) == 0 {
		rate.stopSweep = nil // Warren: the next new entry starts a new sweeper
		return true
	}
	return false
}

func (rate *Ratelimiter) Allow(ip netip.Addr) bool {
	var entry *RatelimiterEntry
	// lookup entry
	rate.mu.RLock()
	entry = rate.table[ip]
	rate.mu.RUnlock()

	// make new entry if not found
	if entry == nil {
		entry = new(RatelimiterEntry)
		entry.tokens = maxTokens - packetCost
		entry.lastTime = rate.timeNow()
		rate.mu.Lock()
		rate.table[ip] = entry
		if rate.stopSweep == nil && !rate.closed { // Warren: start the sweeper with the first entry
			rate.stopSweep = make(chan struct{})
			rate.sweepers.Add(1)
			go rate.sweep(rate.stopSweep)
		}
		rate.mu.Unlock()
		return true
	}

	// add tokens to entry
	entry.mu.Lock()
	now := rate.timeNow()
	entry.tokens += now.Sub(entry.lastTime).Nanoseconds()
	entry.lastTime = now
	if entry.tokens > maxTokens {
		entry.tokens = maxTokens
	}

	// subtract cost of packet
	if entry.tokens > packetCost {
		entry.tokens -= packetCost
		entry.mu.Unlock()
		return true
	}
	entry.mu.Unlock()
	return false
}
