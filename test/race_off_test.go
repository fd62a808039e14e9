//go:build !race

package test

// raceSlowdown scales reaction-time bounds under the race detector (see race_on_test.go).
const raceSlowdown = 1
