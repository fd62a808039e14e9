//go:build race

package test

// raceSlowdown scales reaction-time bounds under the race detector, which slows goroutine
// scheduling several-fold on a small machine. The bounds only prove that no timer or poll is
// involved; the speed goals themselves live in benchmarks.
const raceSlowdown = 5
