package pool

import (
	"math/rand/v2"

	"github.com/warren-tunnel/warren/messages"
)

// placement is what a strategy knows of one eligible exit.
type placement struct {
	exit   *messages.ExitEntry
	count  int // this pool's slots on it (or on their way to it)
	placed int // of those, placed since its newest announcement (which does not count them yet)
}

// loadScore is the exit's announced sessions, plus this pool's placements since, per capacity.
func (p placement) loadScore() float64 {
	c := p.exit.Capacity
	if c <= 0 {
		c = 1
	}
	return float64(p.exit.Load.Sessions+p.placed) / float64(c)
}

// choose picks an exit among candidates (already filtered: eligible, under the cap, not avoided),
// or "" if there is none.
func choose(strategy string, candidates []placement, rng *rand.Rand) string {
	if len(candidates) == 0 {
		return ""
	}
	if strategy == Random {
		return candidates[rng.IntN(len(candidates))].exit.ID
	}
	best := candidates[0]
	for _, c := range candidates[1:] {
		if better(strategy, c, best) {
			best = c
		}
	}
	return best.exit.ID
}

// better orders exits for spread (count, then load) and least_loaded (load, then count); the exit
// id breaks ties, so that a pool's choices are reproducible.
func better(strategy string, a, b placement) bool {
	la, lb := a.loadScore(), b.loadScore()
	if strategy == LeastLoaded {
		if la != lb {
			return la < lb
		}
		if a.count != b.count {
			return a.count < b.count
		}
	} else {
		if a.count != b.count {
			return a.count < b.count
		}
		if la != lb {
			return la < lb
		}
	}
	return a.exit.ID < b.exit.ID
}
