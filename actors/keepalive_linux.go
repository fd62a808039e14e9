package actors

import (
	"net"

	"golang.org/x/sys/unix"
)

// segments reads how many TCP segments the kernel has received and sent on c, and whether nothing
// is queued either way (no unacknowledged or unsent data, an empty receive queue). A keep-alive probe
// arrives while no payload moves and the kernel answers it with an ACK, without telling user space:
// both counters move while the connection is quiet.
func segments(c net.Conn) (in, out uint32, quiet, ok bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, 0, false, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, false, false
	}
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr != nil {
			return
		}
		in, out = info.Segs_in, info.Segs_out
		queued, qerr := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		quiet = qerr == nil && queued == 0 && info.Unacked == 0 && info.Notsent_bytes == 0
	}); err != nil || gerr != nil {
		return 0, 0, false, false
	}
	return in, out, quiet, true
}
