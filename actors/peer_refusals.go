package actors

// What an exit's peer remembers of the flows it refused, so that a Warren client whose direct flow
// was reset can ask why (netstack.ConnectCmdRefusal) and hand its proxy client the exact reply:
//
//	flow refused ──flowRefused(dst, code)──▶ peer remembers dst → code (before the reset is sent)
//	client's query ──refusalQuery(dst)──▶ peer answers the code (connection refused if none)
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
	refusalsKept = 64               // destinations remembered per session; the oldest goes first
	refusalAge   = 30 * time.Second // a record older than this is not an answer
	// refusalOverdraft: connect-service connections read past max_connections_per_session, so that
	// a flow refused for that limit can still be explained; they may ask nothing else.
	refusalOverdraft = 16
)

// flowRefused tells the peer that a flow to dst was refused with code; sent before the reset.
type flowRefused struct {
	dst  netip.AddrPort
	code messages.ReplyCode
}

// refusalQuery asks the peer why a flow to dst was refused; the reply is *refusalAnswer.
type refusalQuery struct{ dst netip.AddrPort }

type refusalAnswer struct{ code messages.ReplyCode }

type refusal struct {
	dst  netip.AddrPort
	code messages.ReplyCode
	at   time.Time
}

// refusals is the peer's memory: the latest refusal per destination, oldest first.
type refusals []refusal

func (r *refusals) add(dst netip.AddrPort, code messages.ReplyCode, now time.Time) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()) // as queries name it
	*r = (*r).without(dst)
	if len(*r) >= refusalsKept {
		*r = append((*r)[:0], (*r)[1:]...)
	}
	*r = append(*r, refusal{dst: dst, code: code, at: now})
}

func (r refusals) without(dst netip.AddrPort) refusals {
	for i, x := range r {
		if x.dst == dst {
			return append(r[:i], r[i+1:]...)
		}
	}
	return r
}

// code is why the latest flow to dst (unmapped) was refused: connection refused when nothing
// recent says. Keyed by destination alone: of two flows to one destination refused at once for
// different reasons, each may be told the later reason.
func (r refusals) code(dst netip.AddrPort, now time.Time) messages.ReplyCode {
	for _, x := range r {
		if x.dst == dst && now.Sub(x.at) <= refusalAge {
			return x.code
		}
	}
	return messages.ReplyConnectionRefused
}
