package netstack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCPConn is a TCP connection on the stack: a gonet.TCPConn (with CloseRead and CloseWrite) that
// can also end with a reset, and whose reset and abort errors wrap syscall.ECONNRESET and
// syscall.ECONNABORTED like a kernel socket's, so relays classify them the same way.
type TCPConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint // alive until Close or Abort
}

func newTCPConn(wq *waiter.Queue, ep tcpip.Endpoint) *TCPConn {
	return &TCPConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep}
}

// Read is gonet's, with resets mapped to errnos (on the error path only).
func (c *TCPConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && err != io.EOF {
		err = mapReset(err)
	}
	return n, err
}

// Write is gonet's, with resets mapped to errnos (on the error path only). gVisor hands a peer's
// reset to the first Read or Write only; a later write sees "closed for send", which a kernel socket
// reports as EPIPE.
func (c *TCPConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil {
		err = mapReset(err)
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNABORTED) &&
			strings.Contains(err.Error(), (&tcpip.ErrClosedForSend{}).String()) {
			err = fmt.Errorf("%w: %w", err, syscall.EPIPE)
		}
	}
	return n, err
}

// Abort ends the connection with a reset (SO_LINGER 0), as a kernel socket does, instead of a FIN.
func (c *TCPConn) Abort() error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	return c.TCPConn.Close()
}

// mapReset wraps gVisor's reset and abort errors (which gonet turns into plain strings) with the
// errno a kernel socket would give.
func mapReset(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, (&tcpip.ErrConnectionReset{}).String()):
		return fmt.Errorf("%w: %w", err, syscall.ECONNRESET)
	case strings.Contains(msg, (&tcpip.ErrConnectionAborted{}).String()), strings.Contains(msg, (&tcpip.ErrAborted{}).String()):
		return fmt.Errorf("%w: %w", err, syscall.ECONNABORTED)
	}
	return err
}

// tcpListener is gonet.TCPListener's Accept, returning *TCPConn.
type tcpListener struct {
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	addr      net.Addr
	cancel    chan struct{} // closed by Close
	closeOnce sync.Once
}

func (l *tcpListener) Accept() (net.Conn, error) {
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		n, wq, err := l.ep.Accept(nil)
		if err == nil {
			return newTCPConn(wq, n), nil
		}
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: tcpipError(err)}
		}
		select {
		case <-l.cancel:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
		case <-notify:
		}
	}
}

func (l *tcpListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.cancel)
		l.ep.Close()
	})
	return nil
}

func (l *tcpListener) Addr() net.Addr { return l.addr }
