package testutil

import (
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/proxy"
)

// SOCKS5Echo connects through the SOCKS5 proxy at socks (no auth; target may be a name, which the
// proxy resolves) to an echo server at target, sends msg and wants it back, all within 10 s.
func SOCKS5Echo(socks, target string, msg []byte) error {
	d, err := proxy.SOCKS5("tcp", socks, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}
