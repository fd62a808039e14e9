package actors

// What an exit's peer remembers of the flows it refused, so that a Warren client whose direct flow
// was reset can ask why (netstack.ConnectCmdRefusal) and hand its proxy client the exact reply:
//
//	flow refused ──flowRefused(from, dst, code)──▶ peer remembers (from, dst) → code (before the reset)
//	client's query ──refusalQuery(from, dst)──▶ peer answers the code (connection refused if none)
//
// from is the flow's source port: of several flows to one destination refused at once, each is
// told its own reason.
//
// A connection's setup goroutine tells the peer before it resets the flow, so the record is in the
// peer's mailbox ahead of any query the reset can cause. The memory is bounded in entries and age,
// and belongs to the peer actor: it goes when the session does.

import (
	"net/netip"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

const (
	refusalsKept = 64               // refused flows remembered per session; the oldest goes first
	refusalAge   = 30 * time.Second // a record older than this is not an answer
	// refusalOverdraft: connect-service connections read past max_connections_per_session, so that
	// a flow refused for that limit can still be explained; they may ask nothing else.
	refusalOverdraft = 16
)

// flowKey names a flow of the session: its source port and its destination (unmapped).
type flowKey struct {
	from uint16
	dst  netip.AddrPort
}

func keyOf(from uint16, dst netip.AddrPort) flowKey {
	return flowKey{from: from, dst: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
}

// flowRefused tells the peer that a flow was refused with code; sent before the reset.
type flowRefused struct {
	flow flowKey
	code messages.ReplyCode
}

// refusalQuery asks the peer why a flow was refused; the reply is *refusalAnswer.
type refusalQuery struct{ flow flowKey }

type refusalAnswer struct{ code messages.ReplyCode }

type refusal struct {
	flow flowKey
	code messages.ReplyCode
	at   time.Time
}

// refusals is the peer's memory of refused flows, oldest first.
type refusals []refusal

func (r *refusals) add(flow flowKey, code messages.ReplyCode, now time.Time) {
	*r = (*r).without(flow)
	if len(*r) >= refusalsKept {
		*r = append((*r)[:0], (*r)[1:]...)
	}
	*r = append(*r, refusal{flow: flow, code: code, at: now})
}

func (r refusals) without(flow flowKey) refusals {
	for i, x := range r {
		if x.flow == flow {
			return append(r[:i], r[i+1:]...)
		}
	}
	return r
}

// code is why flow was refused: connection refused when nothing recent says.
func (r refusals) code(flow flowKey, now time.Time) messages.ReplyCode {
	for _, x := range r {
		if x.flow == flow && now.Sub(x.at) <= refusalAge {
			return x.code
		}
	}
	return messages.ReplyConnectionRefused
}
