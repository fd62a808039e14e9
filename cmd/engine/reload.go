package main

// Reload: `engine run` re-reads its config file (SIGHUP, or POST /v1/reload on the admin API) and
// applies the difference to what runs. What can change in place does; a tunnel or pool setting
// that cannot is applied by replacing that tunnel or pool; what only a restart applies (nats,
// identity, trust, exit, log_format, admin) is reported and left as it runs.
//
//	wireguard_exits              first (SetWireGuardExits; a file is read again): what follows uses
//	                             the new set; if any exit was added, removed or changed (in the
//	                             YAML or in its file), every running tunnel is updated in place so
//	                             that it knows the new set: its session keeps its leg, the next
//	                             one (reconnection, Switch, failover) uses the new configuration
//	tunnel added, or not open    opened (StartTunnel: it keeps trying until its exit answers);
//	                             a configured tunnel closed through the admin API opens again
//	tunnel removed               closed with its drain
//	tunnel's exit changed only   switched, make-before-break (Tunnel.Switch); replaced if not up
//	tunnel's other settings      in place (Tunnel.Update: limits, timeouts, auth, failover list,
//	                             pins, drain...), then switched if its exit changed too
//	tunnel's proxies or health   replaced: the old one closes with its drain, then the new one opens
//	pool added / removed         opened / closed with its drain
//	pool size, strategy, cap,    changed in place (Pool.Update)
//	  filter, max_moves, rotate,
//	  exits.wireguard_dir files  (read again at every reload)
//	pool name, ports, tunnel     replaced: the old pool closes with its drain, then the new one opens
//	log_level                    changed at once

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// reloadResult says what a reload did.
type reloadResult = admin.ReloadResult

// reloadWait bounds one reload: drains, switches and opens included.
const reloadWait = 5 * time.Minute

// applyConfig moves what runs from n.cur to next, returns what it did, and makes next current —
// except where a step failed (that part of cur stays, so that a later reload tries again) and for
// the fields that need a restart (they keep their running values, so that every reload reports
// them). It runs on the node's reload goroutine only: reloads never overlap.
func (n *node) applyConfig(ctx context.Context, next runConfig) reloadResult {
	var res reloadResult
	cur := n.cur
	res.NeedsRestart = needsRestart(cur, next)
	if next.LogLevel != cur.LogLevel {
		n.level.Set(parseLevel(next.LogLevel))
		res.LogLevel = parseLevel(next.LogLevel).String()
	}
	// WireGuard exits first: the updates, switches and opens below check against the new set and
	// give it to the tunnels. Refused, the engine keeps its set and no tunnel is updated for it.
	wgBefore, wgKeep := n.eng.WireGuardExits(), false
	if err := n.eng.SetWireGuardExits(next.WireGuardExits); err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("wireguard_exits: %v", err))
		wgKeep = true
	}
	res.WireGuard = wireGuardChanges(wgBefore, n.eng.WireGuardExits())
	wgChanged := len(res.WireGuard) > 0

	// Tunnels, by name (an unnamed one is tunnel-<its index>, as the engine names it).
	curT, nextT := tunnelsByName(cur.Tunnels), tunnelsByName(next.Tunnels)
	keepOld := map[string]bool{}  // tunnels whose old spec still describes what runs (an update, close or switch failed)
	keepExit := map[string]bool{} // tunnels updated in place whose switch failed: the new spec, on the old exit
	var closeFirst, open, replace []string
	switches := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(curT)) {
		spec, ok := nextT[name]
		if !ok {
			closeFirst = append(closeFirst, name)
			continue
		}
		state, running := n.tunnelState(ctx, name)
		switch {
		case !running:
			// Closed meanwhile (through the admin API), or never opened: the file says it runs.
			open = append(open, name)
		case reflect.DeepEqual(spec, curT[name]) && !wgChanged:
			res.Unchanged++
		case onlyExitChanged(curT[name], spec) && state.Serving() && !wgChanged:
			switches[name] = spec.Exit
		case spec.Exit != curT[name].Exit && !state.Serving():
			// A tunnel that is not up (still trying a mistyped exit, say) cannot switch: it is
			// replaced, and tries the new exit from the start.
			replace = append(replace, name)
		default:
			// Settings other than the exit, or the WireGuard exits: in place if the tunnel takes
			// them (then a changed exit is a switch), else replaced.
			switch err := n.updateInPlace(ctx, name, spec, curT[name].Exit); {
			case err == nil:
				res.Updated = append(res.Updated, name)
				if spec.Exit != curT[name].Exit {
					switches[name] = spec.Exit
				}
			case errors.Is(err, engine.ErrNotInPlace):
				replace = append(replace, name)
			default:
				res.Errors = append(res.Errors, fmt.Sprintf("tunnels %s: update: %v", name, err))
				keepOld[name] = true
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(nextT)) {
		if _, ok := curT[name]; !ok {
			open = append(open, name)
		}
	}
	var mu sync.Mutex // guards res and keepOld while the steps below run at once
	fail := func(name, format string, args ...any) {
		mu.Lock()
		res.Errors = append(res.Errors, fmt.Sprintf(format, args...))
		if name != "" {
			keepOld[name] = true
		}
		mu.Unlock()
	}
	done := func(list *[]string, name string) {
		mu.Lock()
		*list = append(*list, name)
		mu.Unlock()
	}
	replaceOK := map[string]bool{}
	var wg sync.WaitGroup
	// 1. Close what goes and what is replaced (their ports are free afterwards); switch at once.
	for _, name := range slices.Concat(closeFirst, replace) {
		wg.Go(func() {
			if err := n.closeTunnel(ctx, name); err != nil {
				fail(name, "tunnels %s: close: %v", name, err)
				return
			}
			if slices.Contains(closeFirst, name) {
				done(&res.Closed, name)
				return
			}
			mu.Lock()
			replaceOK[name] = true
			mu.Unlock()
		})
	}
	for name, exit := range switches {
		wg.Go(func() {
			t, err := n.eng.Tunnel(ctx, name)
			if err == nil {
				err = t.Switch(ctx, exit)
			}
			if err != nil {
				keep := name
				if slices.Contains(res.Updated, name) { // its new settings are live: only the exit stays
					mu.Lock()
					keepExit[name] = true
					mu.Unlock()
					keep = ""
				}
				fail(keep, "tunnels %s: switch to %s: %v (it stays where it was)", name, exit, err)
				return
			}
			done(&res.Switched, name)
		})
	}
	// The pool's close goes with the first step; its opening with the second.
	poolOpen, poolKeep := false, false
	running := n.pool.Load() != nil // a pool that failed to reopen in an earlier reload is gone
	switch {
	case running && next.Pool == nil:
		wg.Go(func() {
			if err := n.closePool(ctx); err != nil {
				mu.Lock()
				poolKeep = true
				mu.Unlock()
				fail("", "pool: close: %v", err)
				return
			}
			done(&res.Pool, "closed")
		})
	case !running && next.Pool != nil:
		poolOpen = true
	case running && (!reflect.DeepEqual(*cur.Pool, *next.Pool) || next.Pool.Exits.WireGuardDir != "" || wgChanged):
		// Update reads exits.wireguard_dir again, and the engine's wireguard_exits (which this
		// reload may have changed): a reload picks up their files even when the pool's
		// configuration is the same.
		changed, err := n.pool.Load().Update(ctx, *next.Pool)
		switch {
		case errors.Is(err, pool.ErrFixed):
			if err := n.closePool(ctx); err != nil {
				fail("", "pool: close (to replace it): %v", err)
				poolKeep = true
			} else {
				res.Pool = append(res.Pool, "replaced")
				poolOpen = true
			}
		case err != nil:
			fail("", "pool: %v", err)
			poolKeep = true
		default:
			res.Pool = append(res.Pool, changed...)
		}
	}
	wg.Wait()
	// 2. Open what is new, what was not running, and what replaces.
	for _, name := range open {
		wg.Go(func() {
			if _, err := n.eng.StartTunnel(ctx, nextT[name]); err != nil {
				fail("", "tunnels %s: open: %v", name, err)
				return
			}
			done(&res.Opened, name)
		})
	}
	for name := range replaceOK {
		wg.Go(func() {
			if _, err := n.eng.StartTunnel(ctx, nextT[name]); err != nil {
				fail("", "tunnels %s: open: %v", name, err) // closed, not open: the next reload opens it
				return
			}
			done(&res.Replaced, name)
		})
	}
	if poolOpen {
		wg.Go(func() {
			if err := n.openPool(ctx, *next.Pool); err != nil {
				fail("", "pool: open: %v", err) // none runs: the next reload opens it
				return
			}
			if !slices.Contains(res.Pool, "replaced") {
				done(&res.Pool, "opened")
			}
		})
	}
	wg.Wait()
	for _, l := range [][]string{res.Opened, res.Closed, res.Switched, res.Updated, res.Replaced, res.Errors} {
		slices.Sort(l)
	}
	kept := next
	// What needs a restart keeps its running value, so that the next reload reports it again.
	kept.NATS, kept.Identity, kept.Trust, kept.Exit, kept.LogFormat, kept.Admin = cur.NATS, cur.Identity, cur.Trust, cur.Exit, cur.LogFormat, cur.Admin
	kept.Tunnels = keptTunnels(curT, next.Tunnels, keepOld, keepExit)
	if wgKeep {
		kept.WireGuardExits = cur.WireGuardExits
	}
	if poolKeep {
		kept.Pool = cur.Pool
	}
	n.cur = kept
	names := n.configuredNames()
	n.configured.Store(&names)
	n.poolWanted.Store(kept.Pool != nil)
	n.grace.Store(int64(graceFor(kept)))
	select { // the ready line's check looks again
	case n.reloaded <- struct{}{}:
	default:
	}
	n.logger.Info("config reloaded", "wireguard_exits", res.WireGuard, "opened", res.Opened, "closed", res.Closed, "switched", res.Switched,
		"updated", res.Updated, "replaced", res.Replaced, "pool", res.Pool, "unchanged", res.Unchanged, "needs_restart", res.NeedsRestart, "errors", res.Errors)
	return res
}

// updateInPlace gives tunnel name the settings of spec, on its current exit (a changed exit is a
// switch after it); engine.ErrNotInPlace if only a new tunnel applies them. (An update never moves
// a tunnel: the exit only has to pass the checks. A WireGuard exit this reload removed would not:
// then the spec is checked with the exit it moves to.)
func (n *node) updateInPlace(ctx context.Context, name string, spec engine.TunnelSpec, exit string) error {
	t, err := n.eng.Tunnel(ctx, name)
	if err != nil {
		return err
	}
	if !actors.IsWireGuardExit(exit) || n.eng.WireGuardExits()[exit] != nil {
		spec.Exit = exit
	}
	return t.Update(ctx, spec)
}

// wireGuardChanges lists the WireGuard exits added, removed or changed from before to after
// ("wg:a added"), by id.
func wireGuardChanges(before, after map[string]*actors.WireGuardExit) []string {
	var out []string
	for _, id := range slices.Sorted(maps.Keys(before)) {
		switch w, ok := after[id]; {
		case !ok:
			out = append(out, id+" removed")
		case !w.Equal(before[id]):
			out = append(out, id+" changed")
		}
	}
	for _, id := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[id]; !ok {
			out = append(out, id+" added")
		}
	}
	slices.Sort(out)
	return out
}

// tunnelState is the state of the engine's tunnel name, and whether it runs at all (an error other
// than not found counts as running, in an unknown state: it is not switched, but replaced).
func (n *node) tunnelState(ctx context.Context, name string) (messages.TunnelState, bool) {
	t, err := n.eng.Tunnel(ctx, name)
	if errors.Is(err, engine.ErrTunnelNotFound) {
		return "", false
	}
	if err != nil {
		return "", true
	}
	info, err := t.Info(ctx)
	if errors.Is(err, engine.ErrTunnelClosed) {
		return "", false
	}
	return info.State, true
}

// keptTunnels is the tunnel list that now runs: next's, except those whose update, close or switch
// failed, which still run as cur describes them, and those updated in place whose switch failed,
// which run next's settings on cur's exit (a later reload tries again).
func keptTunnels(curT map[string]engine.TunnelSpec, next []engine.TunnelSpec, keepOld, keepExit map[string]bool) []engine.TunnelSpec {
	out := make([]engine.TunnelSpec, 0, len(next))
	seen := map[string]bool{}
	for i, s := range next {
		s.Name = tunnelName(s, i) // explicit from now on: positions may shift, names do not
		seen[s.Name] = true
		switch {
		case keepOld[s.Name]:
			s = curT[s.Name]
		case keepExit[s.Name]:
			s.Exit = curT[s.Name].Exit
		}
		out = append(out, s)
	}
	for _, name := range slices.Sorted(maps.Keys(curT)) {
		if keepOld[name] && !seen[name] { // removed from the file, but its close failed
			out = append(out, curT[name])
		}
	}
	return out
}

// needsRestart lists the top-level sections that changed and that only a restart applies.
func needsRestart(cur, next runConfig) []string {
	var out []string
	for _, f := range []struct {
		name string
		a, b any
	}{
		{"nats", cur.NATS, next.NATS}, {"identity", cur.Identity, next.Identity}, {"trust", cur.Trust, next.Trust},
		{"exit", cur.Exit, next.Exit}, {"log_format", cur.LogFormat, next.LogFormat}, {"admin", cur.Admin, next.Admin},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			out = append(out, f.name)
		}
	}
	return out
}

func tunnelName(s engine.TunnelSpec, i int) string {
	if s.Name != "" {
		return s.Name
	}
	return fmt.Sprintf("tunnel-%d", i)
}

// tunnelsByName names each spec as the engine does (tunnel-<index> when unnamed) and sets its Name.
func tunnelsByName(specs []engine.TunnelSpec) map[string]engine.TunnelSpec {
	m := make(map[string]engine.TunnelSpec, len(specs))
	for i, s := range specs {
		s.Name = tunnelName(s, i)
		m[s.Name] = s
	}
	return m
}

func onlyExitChanged(a, b engine.TunnelSpec) bool {
	a.Exit = b.Exit
	return reflect.DeepEqual(a, b)
}
