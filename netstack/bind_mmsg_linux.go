//go:build linux && (amd64 || arm64)

package netstack

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// mmsghdr is struct mmsghdr of the 64-bit Linux ABI.
type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
	_   [4]byte
}

// mmsgReader receives a batch of datagrams with one recvmmsg(2) call and,
// unlike x/net's ReadBatch, allocates nothing per datagram. It is used by one
// goroutine at a time.
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr                    // len batchSize
	iovs  []syscall.Iovec              // len batchSize; iovs[i] is hdrs[i]'s only iovec
	names []syscall.RawSockaddrInet6   // len batchSize; room for either family
	readF func(fd uintptr) (done bool) // r.recv, bound once so Read does not allocate

	// State of the call in progress, set before rc.Read runs readF.
	want  int
	got   int
	errno syscall.Errno
}

func newMMsgReader(c *net.UDPConn) *mmsgReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &mmsgReader{
		rc:    rc,
		hdrs:  make([]mmsghdr, batchSize),
		iovs:  make([]syscall.Iovec, batchSize),
		names: make([]syscall.RawSockaddrInet6, batchSize),
	}
	r.readF = r.recv
	return r
}

func (r *mmsgReader) recv(fd uintptr) bool {
	n, _, e := syscall.Syscall6(syscall.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
		uintptr(r.want), syscall.MSG_DONTWAIT, 0, 0)
	if e == syscall.EAGAIN || e == syscall.EINTR {
		return false // wait for readability and retry
	}
	r.got, r.errno = int(n), e
	return true
}

// read fills bufs[:n] with datagrams, their lengths in sizes and their
// senders in from.
func (r *mmsgReader) read(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	k := min(len(bufs), len(r.hdrs))
	for i := range k {
		iov := &r.iovs[i]
		iov.Base = nil
		if len(bufs[i]) > 0 {
			iov.Base = &bufs[i][0]
		}
		iov.SetLen(len(bufs[i]))
		h := &r.hdrs[i]
		h.hdr = syscall.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&r.names[i])),
			Namelen: uint32(unsafe.Sizeof(r.names[i])),
			Iov:     iov,
			Iovlen:  1,
		}
		h.n = 0
	}
	r.want, r.got, r.errno = k, 0, 0
	err := r.rc.Read(r.readF)
	for i := range k {
		r.iovs[i].Base = nil // do not keep wireguard's buffers reachable
	}
	if err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	for i := range r.got {
		sizes[i] = int(r.hdrs[i].n)
		from[i] = sockaddrToAddrPort(&r.names[i])
	}
	return r.got, nil
}

func sockaddrToAddrPort(sa *syscall.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case syscall.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	default:
		return netip.AddrPort{}
	}
}
