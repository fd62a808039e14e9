package netstack

import (
	"context"
	"fmt"
	"net"

	"gvisor.dev/gvisor/pkg/waiter"
)

// AcceptContext is Accept that gives up when ctx ends. gVisor's handshake (CreateEndpoint) blocks
// until the peer acknowledges the SYN-ACK, which a peer that went away never does; the handshake then
// continues on a goroutine owned by the stack, which closes the endpoint it yields and which
// Stack.Close ends (closing the stack aborts the handshake) and waits for.
func (f *TCPFlow) AcceptContext(ctx context.Context) (net.Conn, error) {
	t := f.table
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrFlowDone
	}
	t.handlers.Add(1)
	t.mu.Unlock()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result) // unbuffered: a send completes only if AcceptContext still waits
	abandon := make(chan struct{})
	go func() {
		defer t.handlers.Done()
		r := f.take()
		if r == nil {
			select {
			case done <- result{err: ErrFlowDone}:
			case <-abandon:
			}
			return
		}
		var wq waiter.Queue
		ep, err := f.table.createEndpoint(r, &wq)
		if err != nil {
			r.Complete(true)
			select {
			case done <- result{err: fmt.Errorf("netstack: accept %v->%v: %w", f.Src, f.Dst, tcpipError(err))}:
			case <-abandon:
			}
			return
		}
		r.Complete(false)
		c := newTCPConn(&wq, ep)
		select {
		case done <- result{c: c}:
		case <-abandon:
			_ = c.Close()
		}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		close(abandon) // the goroutine closes what it gets from here on
		return nil, ctx.Err()
	}
}
