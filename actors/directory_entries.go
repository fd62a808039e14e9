package actors

// The directory's entries: which announcement may change them, expiry, the marks of exits that
// left, and the snapshots its watchers hear (docs/pool.md, docs/security.md).
//
// An announcement changes the directory only if, in this order: its signature by its identity holds
// and its timestamp is within signaling.MaxClockSkew of this clock (else Forged); the identity is
// trusted for the exit id (else Untrusted: it neither adds, alters nor evicts anything — an entry
// of the trusted exit under that id stays as it is); it is newer than the exit's entry, or than
// the mark the exit left when it was dropped (else Stale: a replay, or a copy that came late).
// Then `leaving` drops the entry at once, and anything else replaces it. A mark is kept until the
// clock check alone refuses everything it covers (its timestamp + MaxClockSkew).

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// change says how an entry changed, and so how soon watchers hear of it.
type change int

const (
	changeNone  change = iota // a fresh announcement saying what the entry says
	changeLoad                // load or capacity only: coalesced (directoryLoadEvery)
	changeState               // joined, left, or anything else changed: at once
)

func (d *directory) announced(ctx actor.Context, a *messages.ExitAnnouncement, now time.Time) {
	st, log := d.cfg.Stats, d.cfg.Logger
	if err := signaling.VerifyExitAnnouncement(a, now); err != nil {
		st.AnnouncementsForged.Add(1)
		d.warnDrop(now, "exit", a.ExitID, "identity", short(a.Identity), "reason", err)
		return
	}
	if err := d.cfg.Trust.Check(a.ExitID, a.Identity, a.Certificate, now); err != nil {
		st.AnnouncementsUntrusted.Add(1)
		d.warnDrop(now, "exit", a.ExitID, "identity", short(a.Identity), "reason", err)
		return
	}
	cur := d.entries[a.ExitID]
	if (cur != nil && a.Timestamp <= cur.Announced.UnixMilli()) || (cur == nil && a.Timestamp <= d.gone[a.ExitID]) {
		st.AnnouncementsStale.Add(1)
		log.Debug("exit announcement dropped", "exit", a.ExitID, "reason", "no newer than the last one")
		return
	}
	if a.State == messages.ExitLeaving {
		d.markGone(a.ExitID, a.Timestamp, now)
		d.armSweep(ctx, 2*directorySweepMax) // to forget the mark in time
		if cur != nil {
			delete(d.entries, a.ExitID)
			log.Info("exit left", "exit", a.ExitID)
			d.changed(ctx, changeState)
		}
		return
	}
	if cur == nil && len(d.entries) >= maxDirectoryExits {
		st.Dropped.Add(1)
		d.warnDrop(now, "exit", a.ExitID, "reason", "directory full", "exits", len(d.entries))
		return
	}
	delete(d.gone, a.ExitID) // back, with a newer announcement than its last
	e := &messages.ExitEntry{ID: a.ExitID, Identity: a.Identity, Certificate: a.Certificate, Endpoint: a.Endpoint,
		Labels: maps.Clone(a.Labels), Capacity: a.Capacity, Load: a.Load, State: a.State, Version: a.Version,
		Interval: time.Duration(a.IntervalMS) * time.Millisecond, Announced: time.UnixMilli(a.Timestamp), Seen: now}
	d.entries[a.ExitID] = e
	if cur == nil {
		log.Info("exit joined", "exit", a.ExitID, "state", a.State, "endpoint", a.Endpoint)
	}
	d.armSweep(ctx, e.Interval)
	d.changed(ctx, changeOf(cur, e))
}

func changeOf(old, e *messages.ExitEntry) change {
	switch {
	case old == nil || old.State != e.State || old.Identity != e.Identity || old.Certificate != e.Certificate ||
		old.Endpoint != e.Endpoint || old.Version != e.Version || !maps.Equal(old.Labels, e.Labels):
		return changeState
	case old.Load != e.Load || old.Capacity != e.Capacity:
		return changeLoad
	}
	return changeNone
}

// markGone remembers the newest timestamp of an exit that was dropped, so that a replay of its
// older announcements does not bring it back. Marks are bounded: the oldest gives way.
func (d *directory) markGone(id string, ts int64, now time.Time) {
	if ts <= d.gone[id] {
		return
	}
	if _, ok := d.gone[id]; !ok && len(d.gone) >= maxDirectoryExits {
		d.forgetMarks(now)
		if len(d.gone) >= maxDirectoryExits {
			oldest := ""
			for k, v := range d.gone {
				if oldest == "" || v < d.gone[oldest] {
					oldest = k
				}
			}
			delete(d.gone, oldest)
		}
	}
	d.gone[id] = ts
}

// forgetMarks drops the marks the clock check covers by now.
func (d *directory) forgetMarks(now time.Time) {
	maps.DeleteFunc(d.gone, func(_ string, ts int64) bool {
		return now.Sub(time.UnixMilli(ts)) > signaling.MaxClockSkew
	})
}

// sweep drops every exit that missed directoryMissed announcements (by this clock: since its last
// one arrived), forgets old marks, and arms the next sweep while there is anything to look at.
func (d *directory) sweep(ctx actor.Context, now time.Time) {
	dropped := false
	every := directorySweepMax
	for id, e := range d.entries {
		if now.Sub(e.Seen) > directoryMissed*e.Interval {
			delete(d.entries, id)
			d.markGone(id, e.Announced.UnixMilli(), now)
			d.cfg.Logger.Info("exit expired", "exit", id, "silent", now.Sub(e.Seen).Round(logPrecision), "interval", e.Interval)
			dropped = true
			continue
		}
		every = min(every, e.Interval/2)
	}
	d.forgetMarks(now)
	d.sweepEvery = 0
	if len(d.entries) > 0 || len(d.gone) > 0 {
		d.armSweep(ctx, every*2)
	}
	if dropped {
		d.changed(ctx, changeState)
	}
}

// armSweep makes sure a sweep comes within interval/2 (bounded to [directorySweepMin,
// directorySweepMax]).
func (d *directory) armSweep(ctx actor.Context, interval time.Duration) {
	every := min(max(interval/2, directorySweepMin), directorySweepMax)
	if d.sweepT != nil && d.sweepEvery <= every {
		return
	}
	d.sweepEvery = every
	rearm(&d.sweepT, ctx, every, &directorySweep{})
}

// changed tells watchers of a change: at once, or for load only at most once per directoryLoadEvery.
func (d *directory) changed(ctx actor.Context, c change) {
	switch c {
	case changeState:
		d.publish(ctx)
	case changeLoad:
		d.loadDirty = true
		if d.loadT != nil {
			return
		}
		if wait := directoryLoadEvery - time.Since(d.lastPublish); wait > 0 {
			d.loadT = sendAfter(ctx, wait, &directoryLoadDue{})
			return
		}
		d.publish(ctx)
	}
}

// publish sends every watcher one snapshot (shared: read only).
func (d *directory) publish(ctx actor.Context) {
	stopTimers(d.loadT)
	d.loadT, d.loadDirty, d.lastPublish = nil, false, time.Now()
	if len(d.watchers) == 0 {
		return
	}
	snap := d.snapshot(d.lastPublish)
	for _, pid := range d.watchers {
		ctx.Send(pid, snap)
	}
}

// snapshot lists the entries, sorted by id; they are immutable and shared.
func (d *directory) snapshot(now time.Time) *messages.ExitDirectory {
	exits := slices.SortedFunc(maps.Values(d.entries), func(a, b *messages.ExitEntry) int { return strings.Compare(a.ID, b.ID) })
	return &messages.ExitDirectory{Exits: exits, Ready: d.ready, At: now}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// warnDrop logs a dropped announcement at warn, at most once per second: anyone on the bus may
// send a flood of them (each is counted all the same); the next line says how many were not logged.
func (d *directory) warnDrop(now time.Time, args ...any) {
	if now.Sub(d.warnedAt) < time.Second {
		d.unlogged++
		return
	}
	if d.unlogged > 0 {
		args = append(args, "not_logged_since_last", d.unlogged)
	}
	d.warnedAt, d.unlogged = now, 0
	d.cfg.Logger.Warn("exit announcement dropped", args...)
}
