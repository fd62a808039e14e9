/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package ratelimiter

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func sweeping(rate *Ratelimiter) bool {
	rate.mu.RLock()
	defer rate.mu.RUnlock()
	return rate.stopSweep != nil
}

func tableLen(rate *Ratelimiter) int {
	rate.mu.RLock()
	defer rate.mu.RUnlock()
	return len(rate.table)
}

// Warren: a limiter runs no sweeper until its first entry; the sweeper removes stale entries and
// ends with the table empty; the next entry starts another; Close ends a running one and starts
// none after.
func TestSweeperRunsOnlyWithEntries(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	var rate Ratelimiter
	rate.timeNow = func() time.Time { return time.Unix(0, now.Load()) }
	rate.Init()
	if sweeping(&rate) {
		t.Fatal("a sweeper runs before any entry")
	}

	ip := netip.MustParseAddr("192.0.2.1")
	if !rate.Allow(ip) {
		t.Fatal("first packet refused")
	}
	if !sweeping(&rate) {
		t.Fatal("no sweeper with an entry")
	}

	now.Add(int64(2 * garbageCollectTime)) // the entry goes stale
	ended := make(chan struct{})
	go func() { rate.sweepers.Wait(); close(ended) }() // the sweeper's return is the event
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("sweeper still running with %d entries", tableLen(&rate))
	}
	if sweeping(&rate) {
		t.Fatal("sweeper returned but is still recorded")
	}
	if n := tableLen(&rate); n != 0 {
		t.Fatalf("sweeper ended with %d entries", n)
	}

	rate.Allow(ip)
	if !sweeping(&rate) {
		t.Fatal("no new sweeper with a new entry")
	}
	rate.Close()
	if sweeping(&rate) {
		t.Fatal("sweeper still recorded after Close")
	}
	rate.sweepers.Wait() // Close already waited; this returns at once

	rate.Allow(netip.MustParseAddr("192.0.2.2"))
	if sweeping(&rate) {
		t.Fatal("a sweeper started after Close")
	}

	rate.Init() // a closed limiter can be reused, as upstream
	rate.Allow(ip)
	if !sweeping(&rate) {
		t.Fatal("no sweeper after Init")
	}
	rate.Close()
}
