package test

import (
	"net/netip"
	"testing"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// Relay is a testutil.UDPRelay between WireGuard clients and an exit on 127.0.0.1, under the
// names the fault tests use. Point the exit's advertised endpoint (ExitConfig.Endpoint) at Addr()
// and the relay at the exit's real UDP address (SetTarget); every client then goes through it.
type Relay struct{ *testutil.UDPRelay }

// NewRelay listens on 127.0.0.1 with a random port and drops everything until SetTarget; it is
// closed at the test's end.
func NewRelay(t testing.TB) *Relay { return &Relay{testutil.StartUDPRelay(t, netip.AddrPort{})} }

// Blackhole drops everything from now on; Restore passes everything again; Lossy drops perMille/1000.
func (r *Relay) Blackhole()           { r.SetBlackhole(true) }
func (r *Relay) Restore()             { r.SetBlackhole(false) }
func (r *Relay) Lossy(perMille int64) { r.SetLoss(perMille) }
