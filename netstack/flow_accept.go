package netstack

import (
	"context"
	"net"
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
		c, err := f.Accept()
		select {
		case done <- result{c: c, err: err}:
		case <-abandon:
			if c != nil {
				_ = c.Close()
			}
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
