package actors

import (
	"net"

	"golang.org/x/sys/unix"
)

// segmentsIn reads how many TCP segments the kernel has received on c. Segments that arrive while
// no payload moves are the peer's keep-alive probes: the kernel answers them without telling user
// space, but counts them.
func segmentsIn(c net.Conn) (uint32, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n uint32
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr == nil {
			n = info.Segs_in
		}
	}); err != nil || gerr != nil {
		return 0, false
	}
	return n, true
}
