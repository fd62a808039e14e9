//go:build !linux

package actors

import "net"

// segmentsIn is not available here: keep-alive probes cannot be seen, so the keep-alive inactivity
// allowance never applies.
func segmentsIn(net.Conn) (uint32, bool) { return 0, false }
