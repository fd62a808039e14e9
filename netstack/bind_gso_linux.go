//go:build linux && (amd64 || arm64)

package netstack

// UDP segmentation offload on Bind's socket, both ways (Linux 4.18 and later for sending, 5.0 for
// receiving). Sending, a run of same-sized datagrams to one endpoint goes to the kernel as one
// message with UDP_SEGMENT: one pass through the UDP and IP layers for up to gsoMaxSegments
// datagrams, which the kernel (or the NIC) cuts apart only where it must. Receiving, UDP_GRO lets
// the kernel hand such runs up still joined, with their segment size in a control message; on
// loopback, where both ends are usually Warren's, a run crosses the stack as one buffer from
// sendmmsg to recvmmsg. wireguard-go's StdNetBind does the same; Warren's own bind needs its own
// because of the adaptive batch and the 9 KiB message buffers (third_party/wireguard/README.md).

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// gsoMaxSegments is UDP_MAX_SEGMENTS of the oldest kernels that have UDP_SEGMENT.
	gsoMaxSegments = 64
	// gsoMaxPayload is the most one UDP message may carry: 65,535 bytes of IPv4 packet less
	// its IPv4 and UDP headers (IPv6 allows 20 more; the smaller bound serves both).
	gsoMaxPayload = 65535 - 20 - 8
	// groBufSize holds the largest datagram, joined or not.
	groBufSize = 1 << 16
	// groMsgs is the most joined datagrams one recvmmsg takes; groSlots is how many of the
	// device's buffers one of them is counted to fill, so a read handed n buffers asks for
	// n/groSlots datagrams (at least one). A datagram from a peer that does not segment holds one
	// packet, so such a peer's packets come groMsgs to a syscall rather than batchSize.
	groMsgs  = 4
	groSlots = 16
	// ctrlLen has room for one control message with a uint16 (unix.CmsgSpace(2) is 24 on
	// 64-bit Linux).
	ctrlLen = 32
	// cmsgHdrLen is unix.SizeofCmsghdr on 64-bit Linux.
	cmsgHdrLen = 16
)

// groBufs pools the receive buffers of every Bind's GRO reader: a reader takes them when its
// socket is readable and gives them back once their datagrams are handed on, so an idle bind
// holds none.
var groBufs = sync.Pool{New: func() any { return new([groBufSize]byte) }}

// setSocketBuffers asks for n bytes of receive and send buffer on c: with SO_RCVBUFFORCE and
// SO_SNDBUFFORCE, which pass net.core.{r,w}mem_max for a process with CAP_NET_ADMIN, and else
// within those limits.
func setSocketBuffers(c *net.UDPConn, n int) {
	rc, err := c.SyscallConn()
	forced := [2]bool{}
	if err == nil {
		_ = rc.Control(func(fd uintptr) {
			forced[0] = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) == nil
			forced[1] = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) == nil
		})
	}
	if !forced[0] {
		_ = c.SetReadBuffer(n)
	}
	if !forced[1] {
		_ = c.SetWriteBuffer(n)
	}
}

// enableGRO turns UDP_GRO on for c and reports whether the kernel took it.
func enableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// supportsGSO reports whether the kernel knows UDP_SEGMENT on c.
func supportsGSO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// groReader receives with UDP_GRO on: one recvmmsg takes up to groMsgs datagrams into pooled
// 64 KiB buffers, and read splits them at their segment size into the device's buffers, over as
// many calls as that takes. It is used by one goroutine at a time.
type groReader struct {
	rc    syscall.RawConn
	hdrs  [groMsgs]mmsghdr
	iovs  [groMsgs]syscall.Iovec
	names [groMsgs]syscall.RawSockaddrInet6
	ctrl  [groMsgs][ctrlLen / 8]uint64 // control messages, 8-byte aligned as cmsghdr needs
	readF func(fd uintptr) (done bool) // r.recv, bound once so read does not allocate

	// bufs[:got] hold the datagrams of the last recvmmsg until they are all handed on (nil
	// otherwise); datagram i has segment size seg[i] (0: one packet) and sender from[i].
	// Datagrams before next are handed on, and next's up to off.
	bufs      [groMsgs]*[groBufSize]byte
	seg       [groMsgs]int
	from      [groMsgs]netip.AddrPort
	got, next int
	off       int

	// The call in progress: how many datagrams to ask for, and recvmmsg's errno.
	want  int
	errno syscall.Errno
}

func newGROReader(c *net.UDPConn) *groReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &groReader{rc: rc}
	r.readF = r.recv
	return r
}

// recv runs recvmmsg without waiting; buffers are taken for it and given back when nothing came.
func (r *groReader) recv(fd uintptr) bool {
	for i := range r.want {
		if r.bufs[i] == nil {
			r.bufs[i] = groBufs.Get().(*[groBufSize]byte)
		}
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(groBufSize)
		r.hdrs[i] = mmsghdr{hdr: syscall.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&r.names[i])),
			Namelen: uint32(unsafe.Sizeof(r.names[i])),
			Iov:     &r.iovs[i],
			Iovlen:  1,
			Control: (*byte)(unsafe.Pointer(&r.ctrl[i][0])),
		}}
		r.hdrs[i].hdr.SetControllen(ctrlLen)
	}
	n, _, e := syscall.Syscall6(syscall.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
		uintptr(r.want), syscall.MSG_DONTWAIT, 0, 0)
	if e == syscall.EAGAIN || e == syscall.EINTR {
		r.release()
		return false // wait for readability and retry
	}
	r.got, r.errno = int(n), e
	return true
}

// read fills bufs[:n] with packets, their lengths in sizes and their senders in from: what is
// left of the last recvmmsg's datagrams, else the next datagrams.
func (r *groReader) read(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if r.next < r.got {
		return r.drain(bufs, sizes, from), nil
	}
	r.want = min(max(len(bufs)/groSlots, 1), groMsgs)
	r.got, r.next, r.off, r.errno = 0, 0, 0, 0
	err := r.rc.Read(r.readF)
	if err == nil && r.errno != 0 {
		err = os.NewSyscallError("recvmmsg", r.errno)
	}
	if err != nil || r.got == 0 {
		r.got = 0
		r.release()
		return 0, err
	}
	for i := range r.got {
		r.seg[i] = groSegment(&r.hdrs[i].hdr, (*[ctrlLen]byte)(unsafe.Pointer(&r.ctrl[i])))
		r.from[i] = sockaddrToAddrPort(&r.names[i])
		if r.hdrs[i].hdr.Flags&syscall.MSG_TRUNC != 0 {
			r.hdrs[i].n = 0 // cut short (larger than groBufSize, which UDP cannot be): dropped
		}
	}
	return r.drain(bufs, sizes, from), nil
}

// drain hands on packets of the pending datagrams, one per buffer, and gives the datagram buffers
// back once all are handed on. A packet longer than its buffer is cut to the buffer's length (as a
// plain read cuts a datagram), and then fails authentication.
func (r *groReader) drain(bufs [][]byte, sizes []int, from []netip.AddrPort) int {
	n := 0
	for n < len(bufs) && n < len(sizes) && n < len(from) && r.next < r.got {
		i := r.next
		size := int(r.hdrs[i].n)
		seg := r.seg[i]
		if seg <= 0 {
			seg = size
		}
		end := min(r.off+seg, size)
		pkt := r.bufs[i][r.off:end]
		sizes[n] = copy(bufs[n], pkt)
		from[n] = r.from[i]
		n++
		r.off = end
		if r.off >= size {
			r.next++
			r.off = 0
		}
	}
	if r.next >= r.got {
		r.release()
	}
	return n
}

// release gives the datagram buffers back to groBufs.
func (r *groReader) release() {
	for i := range r.bufs {
		if r.bufs[i] != nil {
			groBufs.Put(r.bufs[i])
			r.bufs[i] = nil
		}
		r.iovs[i].Base = nil
	}
}

// groSegment returns the segment size of a received datagram from its UDP_GRO control message,
// or 0 when it carries none (a single packet). ctrl is 8-byte aligned.
func groSegment(h *syscall.Msghdr, ctrl *[ctrlLen]byte) int {
	n := min(int(h.Controllen), ctrlLen)
	for off := 0; off+cmsgHdrLen <= n; {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[off]))
		l := int(c.Len)
		if l < cmsgHdrLen || off+l > n {
			return 0
		}
		if c.Level == unix.SOL_UDP && c.Type == unix.UDP_GRO && l >= cmsgHdrLen+4 {
			return int(*(*int32)(unsafe.Pointer(&ctrl[off+cmsgHdrLen]))) // the kernel puts an int
		}
		off += (l + 7) &^ 7
	}
	return 0
}

// gsoWriter sends with UDP_SEGMENT: each run of same-sized packets (the last may be shorter) to
// one endpoint goes as one message whose iovecs are the device's own buffers, so nothing is
// copied before the kernel's own copy. Safe for concurrent use: each send takes a gsoBatch.
type gsoWriter struct {
	rc syscall.RawConn
	// off is set when the kernel refused a segmented send (send: EIO, EMSGSIZE or EINVAL);
	// every later send goes one message per packet.
	off     atomic.Bool
	batches sync.Pool // *gsoBatch
}

// gsoBatch is the scratch of one send.
type gsoBatch struct {
	hdrs   [batchSize]mmsghdr
	iovs   [batchSize]syscall.Iovec
	ctrl   [batchSize][ctrlLen / 8]uint64 // control messages, 8-byte aligned as cmsghdr needs
	first  [batchSize]int                 // the index in bufs of each message's first packet
	name   syscall.RawSockaddrInet6
	namlen uint32
	rc     syscall.RawConn
	writeF func(fd uintptr) (done bool) // b.send, bound once

	// The call in progress: messages [sent, msgs) are still to go; errno is sendmmsg's.
	msgs, sent int
	errno      syscall.Errno
}

func newGSOWriter(c *net.UDPConn) *gsoWriter {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	w := &gsoWriter{rc: rc}
	w.batches.New = func() any {
		b := &gsoBatch{rc: rc}
		b.writeF = b.send
		return b
	}
	return w
}

// send writes every buffer as one datagram to ap, which has the socket's family.
func (w *gsoWriter) send(bufs [][]byte, ap netip.AddrPort) error {
	b := w.batches.Get().(*gsoBatch)
	defer w.batches.Put(b)
	b.setName(ap)
	for len(bufs) > 0 {
		k := min(len(bufs), batchSize)
		gso := !w.off.Load()
		done, err := b.write(bufs[:k], gso)
		if gso && (err == syscall.EIO || err == syscall.EMSGSIZE || err == syscall.EINVAL) {
			// The kernel refused a segmented message: EIO without transmit checksum offload on
			// the route, EMSGSIZE when a segment and its headers exceed the route's MTU (a plain
			// datagram would be fragmented instead), EINVAL for a segmentation it cannot do. From
			// here on this bind sends one message per packet, as it did before offload; the
			// message that failed, and what follows it, go again that way.
			w.off.Store(true)
			bufs = bufs[done:]
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmmsg", err)
		}
		bufs = bufs[k:]
	}
	return nil
}

// setName sets the destination of the batch's messages.
func (b *gsoBatch) setName(ap netip.AddrPort) {
	b.name = syscall.RawSockaddrInet6{}
	port := ap.Port()
	if ap.Addr().Is4() {
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&b.name))
		sa.Family = syscall.AF_INET
		sa.Addr = ap.Addr().As4()
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		b.namlen = syscall.SizeofSockaddrInet4
		return
	}
	b.name.Family = syscall.AF_INET6
	b.name.Addr = ap.Addr().As16()
	p := (*[2]byte)(unsafe.Pointer(&b.name.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	b.namlen = syscall.SizeofSockaddrInet6
}

// write sends bufs (at most batchSize) as messages, joined into runs when gso is set. It returns
// how many of bufs were sent before an error.
func (b *gsoBatch) write(bufs [][]byte, gso bool) (int, error) {
	b.msgs = 0
	seg, count, total, closed := 0, 0, 0, false
	for i, buf := range bufs {
		iov := &b.iovs[i]
		iov.Base = nil
		if len(buf) > 0 {
			iov.Base = &buf[0]
		}
		iov.SetLen(len(buf))
		if gso && b.msgs > 0 && !closed && len(buf) <= seg && count < gsoMaxSegments && total+len(buf) <= gsoMaxPayload {
			h := &b.hdrs[b.msgs-1]
			h.hdr.Iovlen++
			count++
			total += len(buf)
			closed = len(buf) < seg // a shorter packet may only end a run
			if count == 2 {
				b.setSegment(b.msgs-1, seg)
			}
			continue
		}
		b.hdrs[b.msgs] = mmsghdr{hdr: syscall.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&b.name)),
			Namelen: b.namlen,
			Iov:     iov,
			Iovlen:  1,
		}}
		b.first[b.msgs] = i
		b.msgs++
		seg, count, total, closed = len(buf), 1, len(buf), false
	}
	b.sent, b.errno = 0, 0
	var err error
	for b.sent < b.msgs && err == nil {
		if err = b.rc.Write(b.writeF); err == nil && b.errno != 0 {
			err = b.errno
		}
	}
	sent := len(bufs)
	if b.sent < b.msgs {
		sent = b.first[b.sent]
	}
	for i := range bufs {
		b.iovs[i].Base = nil // do not keep wireguard's buffers reachable
	}
	return sent, err
}

// setSegment marks message m as a run of seg-byte datagrams (UDP_SEGMENT).
func (b *gsoBatch) setSegment(m, seg int) {
	ctrl := (*[ctrlLen]byte)(unsafe.Pointer(&b.ctrl[m]))
	c := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
	c.Level = unix.SOL_UDP
	c.Type = unix.UDP_SEGMENT
	c.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&ctrl[cmsgHdrLen])) = uint16(seg) // the kernel reads a u16
	h := &b.hdrs[m].hdr
	h.Control = &ctrl[0]
	h.SetControllen(unix.CmsgSpace(2))
}

// send runs sendmmsg on the messages not yet sent, without waiting.
func (b *gsoBatch) send(fd uintptr) bool {
	n, _, e := syscall.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.sent])),
		uintptr(b.msgs-b.sent), syscall.MSG_DONTWAIT, 0, 0)
	if e == syscall.EAGAIN || e == syscall.EINTR {
		return false // wait for writability and retry
	}
	if e != 0 {
		b.errno = e
		return true
	}
	b.sent += int(n)
	return true
}
