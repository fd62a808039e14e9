//go:build !linux || !(amd64 || arm64)

package netstack

import (
	"net"
	"net/netip"
)

// mmsgReader is only implemented for 64-bit Linux; elsewhere Bind falls
// back to x/net's ReadBatch or single reads.
type mmsgReader struct{}

func newMMsgReader(*net.UDPConn) *mmsgReader { return nil }

func (*mmsgReader) read([][]byte, []int, []netip.AddrPort) (int, error) { return 0, net.ErrClosed }
