package actors

// A tunnel's proxy listeners: bound synchronously when the tunnel starts (a port in use fails the
// open at once), accepted from by one goroutine each once the tunnel is Up (a StartTunnel tunnel's
// from the start: it refuses until it is Up, and parks while it reconnects), closed when draining
// starts or in Stopping; they keep their ports across switches, reconfigurations and reconnects.
// acceptLoop, at the end, is also the exit device's connect-service loop.

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/proxy"
)

type proxyListener struct {
	ln   net.Listener
	kind proxy.Kind
	stop chan struct{} // closed before the listener; nil until the loop starts
	end  chan struct{} // closed when its accept loop returned; nil until the loop starts
}

func (t *tunnelActor) closeListeners() {
	for _, l := range t.listeners {
		if l.stop != nil {
			select {
			case <-l.stop:
				continue // closed already
			default:
				close(l.stop)
			}
		}
		_ = l.ln.Close()
	}
}

func (t *tunnelActor) bindListeners() error {
	for _, l := range []struct {
		addr string
		kind proxy.Kind
	}{{t.cfg.SOCKSAddr, proxy.SOCKS5}, {t.cfg.HTTPAddr, proxy.HTTP}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("%s proxy listen on %s: %w", l.kind, l.addr, err)
		}
		t.listeners = append(t.listeners, &proxyListener{ln: ln, kind: l.kind})
		if l.kind == proxy.SOCKS5 {
			t.info.SOCKSAddr = ln.Addr().String()
		} else {
			t.info.HTTPAddr = ln.Addr().String()
		}
	}
	return nil
}

// startAccepting starts each listener's accept loop (once: a StartTunnel tunnel starts them when it
// binds, before it is Up).
func (t *tunnelActor) startAccepting(ctx actor.Context) {
	system, self := ctx.ActorSystem(), ctx.Self()
	for _, l := range t.listeners {
		if l.stop != nil {
			continue // started already
		}
		l.stop, l.end = make(chan struct{}), make(chan struct{})
		kind := l.kind
		go acceptLoop(l.ln, l.stop, l.end, func(c net.Conn) { system.Root.Send(self, &connAccepted{c: c, kind: kind}) })
	}
}

// acceptLoop hands each accepted connection to deliver until the listener is closed, then closes end.
// It is owned by the actor that owns the listener: that actor closes the listener and waits on end.
// A transient failure (out of file descriptors) backs off like net/http's server instead of spinning
// or giving up; that wait paces retries, it synchronises nothing.
func acceptLoop(ln net.Listener, stop <-chan struct{}, end chan<- struct{}, deliver func(net.Conn)) {
	defer close(end)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-stop: // the owner closed the listener
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		deliver(c)
	}
}
