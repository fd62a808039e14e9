//go:build linux && (amd64 || arm64)

package netstack

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
)

// On a route whose MTU is below a segment and its headers, the kernel refuses a segmented send
// (EMSGSIZE) where it would fragment a plain datagram: the bind must fall back to one message per
// packet and deliver the run. Run in a network namespace of its own whose loopback has MTU 1400
// (needs CAP_SYS_ADMIN: skipped without it).
func TestBindSegmentedRunOverSmallMTU(t *testing.T) {
	done := make(chan error, 1) // a reason to skip, or nil
	go func() {
		var skip error
		defer func() { done <- skip }()
		// This goroutine's thread moves to a new network namespace and is never unlocked, so it
		// ends with the goroutine instead of returning to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			skip = err
			return
		}
		if err := setLoopback(1400); err != nil {
			t.Errorf("loopback MTU 1400: %v", err)
			return
		}
		ip := netip.MustParseAddr("127.0.0.1")
		a, b := NewBind(ip), NewBind(ip)
		fns, port, err := a.Open(0)
		if err != nil {
			t.Error(err)
			return
		}
		defer a.Close()
		if _, _, err := b.Open(0); err != nil {
			t.Error(err)
			return
		}
		defer b.Close()
		ep, err := b.ParseEndpoint(netip.AddrPortFrom(ip, port).String())
		if err != nil {
			t.Error(err)
			return
		}
		var run [][]byte
		for i := range 3 {
			run = append(run, bytes.Repeat([]byte{byte(i + 1)}, 1452))
		}
		if err := b.Send(run, ep); err != nil {
			t.Errorf("a run of 3 × 1452 bytes over MTU 1400: %v", err)
			return
		}
		if !b.gso.off.Load() {
			t.Error("segmentation still on after the kernel refused it")
		}
		bufs := [][]byte{make([]byte, 9216), make([]byte, 9216), make([]byte, 9216)}
		sizes, eps := make([]int, 3), make([]conn.Endpoint, 3)
		var got [][]byte
		_ = a.udp.SetReadDeadline(time.Now().Add(testTimeout))
		for len(got) < 3 {
			k, err := fns[0](bufs, sizes, eps)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range k {
				got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
			}
		}
		for i := range run {
			if !bytes.Equal(got[i], run[i]) {
				t.Errorf("datagram %d: %d bytes, want %d of %d", i, len(got[i]), len(run[i]), i+1)
			}
		}
	}()
	if err := <-done; err != nil {
		t.Skipf("no network namespace of its own: %v", err)
	}
}

// setLoopback sets the MTU of this network namespace's loopback and brings it up.
func setLoopback(mtu int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var req struct {
		name  [unix.IFNAMSIZ]byte
		value int32
		_     [20]byte
	}
	copy(req.name[:], "lo")
	req.value = int32(mtu)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFMTU, uintptr(unsafe.Pointer(&req))); e != 0 {
		return e
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&req))); e != 0 {
		return e
	}
	req.value |= unix.IFF_UP
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&req))); e != 0 {
		return e
	}
	return nil
}
