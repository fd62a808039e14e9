package actors

import (
	"net"

	"golang.org/x/sys/unix"
)

// segments reads how many TCP segments the kernel has received and sent on c. A keep-alive probe
// arrives while no payload moves and the kernel answers it with an ACK, without telling user space;
// both counters move. (A delayed ACK of our last data moves only the received one.)
func segments(c net.Conn) (in, out uint32, ok bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr == nil {
			in, out = info.Segs_in, info.Segs_out
		}
	}); err != nil || gerr != nil {
		return 0, 0, false
	}
	return in, out, true
}
