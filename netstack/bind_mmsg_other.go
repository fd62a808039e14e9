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

// groReader and gsoWriter (UDP segmentation offload) are only implemented for 64-bit Linux.
type groReader struct{}

func enableGRO(*net.UDPConn) bool                                      { return false }
func supportsGSO(*net.UDPConn) bool                                    { return false }
func newGROReader(*net.UDPConn) *groReader                             { return nil }
func (*groReader) read([][]byte, []int, []netip.AddrPort) (int, error) { return 0, net.ErrClosed }

type gsoWriter struct{}

func newGSOWriter(*net.UDPConn) *gsoWriter             { return nil }
func (*gsoWriter) send([][]byte, netip.AddrPort) error { return net.ErrClosed }

// setSocketBuffers asks for n bytes of receive and send buffer on c, within the system's limits.
func setSocketBuffers(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	_ = c.SetWriteBuffer(n)
}
