package pool

import (
	"math/rand/v2"
	"testing"

	"github.com/warren-tunnel/warren/messages"
)

func exitEntry(id string, sessions, capacity int) *messages.ExitEntry {
	return &messages.ExitEntry{ID: id, Capacity: capacity, Load: messages.ExitLoad{Sessions: sessions}, State: messages.ExitServing}
}

func TestStrategies(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a, b, c := exitEntry("a", 900, 1000), exitEntry("b", 10, 1000), exitEntry("c", 500, 1000)
	cands := []placement{{exit: a, count: 1}, {exit: b, count: 5}, {exit: c, count: 1}}
	if got := choose(Spread, cands, rng); got != "c" {
		t.Errorf("spread: %s, want c (fewest slots, then lower load than a)", got)
	}
	if got := choose(LeastLoaded, cands, rng); got != "b" {
		t.Errorf("least_loaded: %s, want b (10/1000)", got)
	}
	// Placements since the announcement count: b took 600 of ours since it announced 10.
	cands[1].placed = 600
	if got := choose(LeastLoaded, cands, rng); got != "c" {
		t.Errorf("least_loaded with placements since the announcement: %s, want c", got)
	}
	seen := map[string]int{}
	for range 300 {
		seen[choose(Random, cands, rng)]++
	}
	if len(seen) != 3 || seen["a"] < 50 || seen["b"] < 50 || seen["c"] < 50 {
		t.Errorf("random over 300 draws: %v, want each of a, b, c about 100 times", seen)
	}
	if got := choose(Spread, nil, rng); got != "" {
		t.Errorf("no candidates: %q", got)
	}
	// Ties break by id, so that choices are reproducible.
	if got := choose(Spread, []placement{{exit: exitEntry("z", 0, 1)}, {exit: exitEntry("m", 0, 1)}}, rng); got != "m" {
		t.Errorf("tie: %s, want m", got)
	}
}
