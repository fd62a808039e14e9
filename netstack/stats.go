package netstack

// Process-wide TCP counters of every Stack: New hands gVisor the shared counters below in
// stack.Options.Stats. stack.New keeps opts.Stats.FillIn(), and FillIn (tcpip.InitStatCounters)
// replaces only the counters left nil, so each stack counts into these pointers; the TCP endpoints
// reach them through stack.Stats() (the sender's retransmissions and recoveries) or
// Route.Stats(), which is the outgoing NIC's stack's (segments sent). Everything else in the
// stack's Stats stays the stack's own.

import "gvisor.dev/gvisor/pkg/tcpip"

// stackCounters are shared by every Stack made by New in this process. A statistic counter carries no
// lifecycle state (nothing is opened, closed or waited for through it), so unlike the stacks
// themselves it may be process-wide: the counters only grow, from the process's start.
//
// SegmentsAckedWithDSACK is deliberately not among them: gVisor's sender reads that stack-wide
// counter in detectSpuriousRecovery (RFC 3522 step 5: "has this connection seen a DSACK?"), so a
// process-wide one would let one stack's DSACKs change another's loss recovery. Counters that only
// count are safe to share; that one is an input to a decision.
var stackCounters struct {
	segmentsSent, retransmits, fastRetransmits, slowStartRetransmits, timeouts,
	fastRecoveries, sackRecoveries, tlpRecoveries, spuriousRecoveries tcpip.StatCounter
	// transportDrops is gVisor's stack-wide DroppedPackets (only ever incremented); linkDrops is
	// counted by the link endpoint (link.go).
	transportDrops, linkDrops tcpip.StatCounter
	// forwarderDrops is gVisor's TCP.ForwardMaxInFlightDrop (SYNs an exit's forwarder ignored),
	// and the flow table's own count of SYNs over a source's share (flow.go).
	forwarderDrops tcpip.StatCounter
}

// sharedStats is the stack.Options.Stats New passes: the TCP counters above, every other counter
// nil (so each stack gets its own from FillIn).
func sharedStats() tcpip.Stats {
	var s tcpip.Stats
	t := &s.TCP
	t.SegmentsSent = &stackCounters.segmentsSent
	t.Retransmits = &stackCounters.retransmits
	t.FastRetransmit = &stackCounters.fastRetransmits
	t.SlowStartRetransmits = &stackCounters.slowStartRetransmits
	t.Timeouts = &stackCounters.timeouts
	t.FastRecovery = &stackCounters.fastRecoveries
	t.SACKRecovery = &stackCounters.sackRecoveries
	t.TLPRecovery = &stackCounters.tlpRecoveries
	t.SpuriousRecovery = &stackCounters.spuriousRecoveries
	t.ForwardMaxInFlightDrop = &stackCounters.forwarderDrops
	s.DroppedPackets = &stackCounters.transportDrops
	return s
}

// TCPStats are the TCP counters of all the stacks New made in this process, closed ones included,
// since the process started. Every field only grows.
type TCPStats struct {
	// SegmentsSent counts TCP segments sent, data and pure ACKs alike. gVisor's software GSO, which
	// Warren's link offers, cuts a large write into MSS-sized segments before counting: each counts.
	SegmentsSent uint64
	// Retransmits counts segments sent again, whatever the cause (fast retransmit, SACK recovery,
	// timeout); FastRetransmits and SlowStartRetransmits are parts of it.
	Retransmits uint64
	// FastRetransmits counts resends of the first unacknowledged segment on duplicate ACKs: on
	// entering recovery, and (Reno, without SACK) on each partial ACK during it.
	FastRetransmits uint64
	// SlowStartRetransmits counts retransmissions sent while the window was below ssthresh (after
	// a timeout, mostly).
	SlowStartRetransmits uint64
	// Timeouts counts retransmission timer expiries (RTOs) with data outstanding.
	Timeouts uint64
	// FastRecoveries counts entries into Reno fast recovery (a connection without SACK).
	FastRecoveries uint64
	// SACKRecoveries counts entries into SACK loss recovery (RFC 6675); Warren's stacks enable
	// SACK, so this is their usual recovery.
	SACKRecoveries uint64
	// TLPRecoveries counts SACK recoveries a tail loss probe started (a part of SACKRecoveries).
	// Tail loss probes belong to RACK, which tuneTCP turns off, so it stays 0 while RACK is off.
	TLPRecoveries uint64
	// SpuriousRecoveries counts recoveries found, afterwards, to have been entered needlessly
	// (RFC 3522: the ACK's timestamp echo predates the retransmission).
	SpuriousRecoveries uint64
	// TransportDrops counts packets the stacks dropped at the transport layer (gVisor's
	// DroppedPackets): above all a TCP segment that found its connection's queue of unprocessed
	// segments full, and a SYN that found a listener's backlog full.
	TransportDrops uint64
	// LinkDrops counts outbound packets dropped because the link's queue to the WireGuard device
	// stayed full for fullWait (a device that stopped reading); 0 while devices keep up.
	LinkDrops uint64
	// ForwarderDrops counts SYNs of new flows that an exit's stack ignored because fwdMaxInFlight
	// flows, or fwdMaxInFlightPerSource of the same source, were already waiting for their dial;
	// the peer sends its SYN again after a second. 0 unless a flood or a great many slow
	// destinations.
	ForwarderDrops uint64
}

// ReadTCPStats returns the process-wide TCP counters of Warren's stacks. Each field is read
// atomically, the fields one after another: under traffic they are not one instant's snapshot.
func ReadTCPStats() TCPStats {
	c := &stackCounters
	return TCPStats{
		SegmentsSent:         c.segmentsSent.Value(),
		Retransmits:          c.retransmits.Value(),
		FastRetransmits:      c.fastRetransmits.Value(),
		SlowStartRetransmits: c.slowStartRetransmits.Value(),
		Timeouts:             c.timeouts.Value(),
		FastRecoveries:       c.fastRecoveries.Value(),
		SACKRecoveries:       c.sackRecoveries.Value(),
		TLPRecoveries:        c.tlpRecoveries.Value(),
		SpuriousRecoveries:   c.spuriousRecoveries.Value(),
		TransportDrops:       c.transportDrops.Value(),
		LinkDrops:            c.linkDrops.Value(),
		ForwarderDrops:       c.forwarderDrops.Value(),
	}
}
