package test

// Ceilings for the chains of BenchmarkChain (issue 17), measured on the same machine in the same
// way, for docs/performance.md to compare against:
//
//	go test ./test -run '^$' -bench 'BenchmarkLimit' -benchtime 5x -count 3
//
// (The ChaCha20-Poly1305 ones need many more ops: -benchtime 1s, or 200000x.)
//
// BenchmarkLimitLoopbackTCP: the chains' upload with no chain at all, a Go client straight to the
// same sink on 127.0.0.1 (runChain: 32 MiB per op over the streams, the same metrics). The sink
// reads through io.Copy into io.Discard (8 KiB reads), as it does for the chains, so this is the
// ceiling of this harness on this kernel, not of the kernel's loopback.
//
// BenchmarkLimitChaCha20Poly1305: WireGuard's AEAD over what one packet carries at MTU 1420 (1420
// bytes of inner IP packet; WireGuard's 16-byte header and 16-byte tag, then UDP and IP, come on
// top), Seal and Open, on 1 and 2 goroutines (b.N split between them). A tunnel seals each packet
// once on the sender and opens it once on the receiver; with both ends in one process, as in
// BenchmarkChain, each MB costs one Seal and one Open, besides the ACKs going back.

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// limitPacket is the plaintext of one WireGuard data packet at MTU 1420.
const limitPacket = 1420

func BenchmarkLimitLoopbackTCP(b *testing.B) {
	for _, streams := range []int{1, 2} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			sink := testutil.SinkServer(b)
			runChain(b, streams, false, func() (net.Conn, error) {
				return net.DialTimeout("tcp", sink.Addr(), benchStall)
			})
		})
	}
}

func BenchmarkLimitChaCha20Poly1305(b *testing.B) {
	for _, op := range []string{"seal", "open"} {
		for _, g := range []int{1, 2} {
			b.Run(fmt.Sprintf("op=%s/goroutines=%d", op, g), func(b *testing.B) {
				runAEAD(b, op == "open", g)
			})
		}
	}
}

// runAEAD seals (or opens) b.N packets of limitPacket bytes, split between g goroutines, each with
// its own buffers, as WireGuard's encryption and decryption workers have, sharing one AEAD as they
// share a keypair's.
func runAEAD(b *testing.B, open bool, g int) {
	var key [chacha20poly1305.KeySize]byte
	for i := range key {
		key[i] = byte(i)
	}
	aead, err := chacha20poly1305.New(key[:]) // stateless: safe for concurrent use
	if err != nil {
		b.Fatal(err)
	}
	plain := testutil.PayloadBytes(17, limitPacket)
	var nonce0 [chacha20poly1305.NonceSize]byte
	sealed := aead.Seal(nil, nonce0[:], plain, nil)
	errs := make(chan error, g)
	b.SetBytes(limitPacket)
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range g {
		n := b.N / g
		if w < b.N%g {
			n++
		}
		wg.Go(func() {
			var nonce [chacha20poly1305.NonceSize]byte
			out := make([]byte, 0, limitPacket+chacha20poly1305.Overhead)
			var err error
			for i := range n {
				if !open {
					binary.LittleEndian.PutUint64(nonce[4:], uint64(i)) // WireGuard's counter nonce
					out = aead.Seal(out[:0], nonce[:], plain, nil)
				} else if out, err = aead.Open(out[:0], nonce0[:], sealed, nil); err != nil {
					errs <- fmt.Errorf("open: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
