package test

// TestTransitions: every transition of the tunnel state machine (docs/state-machines.md, "Tunnel
// transitions") is taken by at least one row, driven by real faults, and each row asserts the exact
// sequence of the tunnel's state events on Engine.Events() from its opening to Closed.
// TestTransitionsMatchDocs checks the rows against the documented table, both ways.

import (
	"slices"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

type transitionRow struct {
	name string
	run  func(t *testing.T) rowRun // the scenario (transitions_rows_test.go)
	want []step                    // every transition of the tunnel, opening to Closed
}

func transitionRows() []transitionRow {
	// up…: opened, then on along states; every Up tunnel ends with Close: draining, closing, closed.
	up := func(states ...messages.TunnelState) []step {
		return path(append([]messages.TunnelState{stNeg, stHs, stUp}, states...)...)
	}
	closed := []messages.TunnelState{stDrn, stClg, stCld}
	return []transitionRow{
		{"close idle", rowCloseIdle, up(closed...)},
		{"close with an active connection", rowCloseActive, up(closed...)},
		{"close: the drain runs out", rowDrainRunsOut, up(closed...)},
		{"a second close while draining", rowSecondClose, up(closed...)},
		{"unknown exit", rowUnknownExit, path(stNeg, stFail, stCld)},
		{"session refused", rowRefused, path(stNeg, stFail, stCld)},
		{"proxy address in use", rowPortInUse, path(stNeg, stFail, stCld)},
		{"close while negotiating (exit never answers)", rowCloseNegotiating, path(stNeg, stClg, stCld)},
		{"switch and reconfigure before up (ErrNotUp)", rowNotUp, path(stNeg, stClg, stCld)},
		{"handshake timeout (blackholed)", rowHandshakeTimeout, path(stNeg, stHs, stFail, stCld)},
		{"close while handshaking", rowCloseHandshaking, path(stNeg, stHs, stClg, stCld)},
		{"switch", rowSwitch, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"switch to an exit that fails: stays up", rowSwitchFails, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"close while switching (ErrBusy meanwhile)", rowCloseSwitching, up(append([]messages.TunnelState{stSw}, closed...)...)},
		{"new exit lost mid-switch: stays up on the old one", rowNewLost, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"switch with a connection: the old leg drains until it ends", rowLegDrains, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"old exit lost while its leg drains", rowLegLostDraining, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"old exit lost mid-switch, new leg up", rowOldLostNewUp, up(append([]messages.TunnelState{stSw, stUp}, closed...)...)},
		{"old exit lost mid-switch, new leg failed (blackholed)", rowBothLost, up(stSw, stRcn, stClg, stCld)},
		{"close while switching after the old exit was lost", rowCloseAfterOldLost, up(stSw, stClg, stCld)},
		{"reconfigure", rowReconfigure, up(append([]messages.TunnelState{stRcf, stUp}, closed...)...)},
		{"close while reconfiguring (ErrBusy meanwhile)", rowCloseReconfiguring, up(stRcf, stClg, stCld)},
		{"reconfigure and switch while draining (ErrTunnelClosed)", rowChangeWhileDraining, up(closed...)},
		{"close while reconnecting", rowCloseReconnecting, up(stRcn, stClg, stCld)},
		{"switch and reconfigure while reconnecting (ErrBusy)", rowBusyReconnecting, up(stRcn, stClg, stCld)},
		{"data plane blackholed, then healed", rowBlackhole, up(append([]messages.TunnelState{stRcn, stUp}, closed...)...)},
		{"exit goodbye: failover exit", rowGoodbyeFailover, up(append([]messages.TunnelState{stRcn, stUp}, closed...)...)},
		{"NATS outage", rowNATSOutage, up(append([]messages.TunnelState{stDeg, stUp}, closed...)...)},
		{"close while degraded", rowCloseDegraded, up(append([]messages.TunnelState{stDeg}, closed...)...)},
		{"switch while degraded fails", rowDegradedSwitch, up(append([]messages.TunnelState{stDeg, stSw, stUp, stDeg, stUp}, closed...)...)},
		{"reconfigure while degraded fails", rowDegradedReconfigure, up(stDeg, stRcf, stFail, stCld)},
		{"data plane lost while degraded", rowDegradedDataPlane, up(stDeg, stRcn, stClg, stCld)},
		{"started before its exit: reconnects until it comes", rowStartLate, path(append([]messages.TunnelState{stNeg, stRcn, stUp}, closed...)...)},
		{"started through a blackhole: reconnects until it heals", rowStartBlackholed, path(append([]messages.TunnelState{stNeg, stHs, stRcn, stUp}, closed...)...)},
		{"started, then a reconfigure that fails: reconnects", rowStartReconfigureFails, up(append([]messages.TunnelState{stRcf, stRcn, stUp}, closed...)...)},
	}
}

func TestTransitions(t *testing.T) {
	start := time.Now()
	rows := transitionRows()
	t.Run("rows", func(t *testing.T) {
		for _, row := range rows {
			t.Run(row.name, func(t *testing.T) {
				t.Parallel()
				began := time.Now()
				run := row.run(t)
				if run.tun != nil {
					if err := run.tun.Close(bounded(t)); err != nil {
						t.Fatalf("Close at the end of the row: %v", err)
					}
				}
				got := run.rec.untilClosed(t)
				if !slices.Equal(got, row.want) {
					t.Fatalf("transitions:\n got  %v\n want %v\nevents:\n%s", got, row.want, run.rec.log())
				}
				t.Logf("%v in %v", got, time.Since(began).Round(time.Millisecond))
			})
		}
	})
	t.Logf("%d rows in %v", len(rows), time.Since(start).Round(time.Millisecond))
	if !t.Failed() && !testing.Short() {
		checkLegSteps(t) // every row has run: their legs took every documented leg transition
	}
}

// TestTransitionsMatchDocs: every documented transition is in some row's expected sequence, and
// every transition a row expects is documented.
func TestTransitionsMatchDocs(t *testing.T) {
	doc := docTransitions(t)
	covered := map[step]bool{}
	for _, row := range transitionRows() {
		if len(row.want) == 0 || row.want[0].from != stNeg || row.want[len(row.want)-1].to != stCld {
			t.Errorf("row %q: %v does not run from negotiating to closed", row.name, row.want)
		}
		for i, s := range row.want {
			if i > 0 && row.want[i-1].to != s.from {
				t.Errorf("row %q: %v does not follow %v", row.name, s, row.want[i-1])
			}
			if _, ok := doc[s]; !ok {
				t.Errorf("row %q expects %v, which docs/state-machines.md does not list", row.name, s)
			}
			covered[s] = true
		}
	}
	for s, on := range doc {
		if !covered[s] {
			t.Errorf("docs/state-machines.md lists %v (on %s), which no row takes", s, on)
		}
	}
	if !t.Failed() {
		t.Logf("%d documented transitions, all taken; %d rows", len(doc), len(transitionRows()))
	}
}
