package netstack

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// The carried wireguard-go's inline crypto, send and receive (third_party/wireguard/README.md
// change 10) keep a peer's packets in order: bursts of numbered datagrams, large batches and lone
// packets mixed, arrive in increasing order (a datagram may be lost to a full socket buffer, never
// overtaken), with every batch inline and with only small ones inline (the rest through the
// workers and the sequential goroutines, which inline batches must not overtake).
func TestInlineKeepsOrder(t *testing.T) {
	for _, inline := range []int{math.MaxInt, 4} {
		t.Run(fmt.Sprintf("inline=%d", inline), func(t *testing.T) {
			opts := &device.DeviceOptions{Workers: 2, AdaptiveBatch: true, InlineCrypto: inline, InlineSend: true, InlineReceive: true}
			client := newWGNodeWith(t, Config{Addresses: []netip.Addr{clientAddr}}, opts)
			exit := newWGNodeWith(t, Config{Addresses: []netip.Addr{exitAddr}}, opts)
			client.addPeer(t, exit, "0.0.0.0/0")
			exit.addPeer(t, client, clientAddr.String()+"/32")

			srv, err := exit.stack.ListenUDP(netip.AddrPortFrom(exitAddr, 6000))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c := client.dial(t, "udp", netip.AddrPortFrom(exitAddr, 6000))
			defer c.Close()
			// The first datagram waits for the handshake; resend it until it is through.
			buf := make([]byte, 2048)
			msg := make([]byte, 1200)
			ready := false
			for try := 0; try < 10 && !ready; try++ {
				binary.BigEndian.PutUint32(msg, math.MaxUint32)
				if _, err := c.Write(msg[:8]); err != nil {
					t.Fatal(err)
				}
				_ = srv.SetReadDeadline(time.Now().Add(time.Second))
				_, _, err := srv.ReadFrom(buf)
				ready = err == nil
			}
			if !ready {
				t.Fatal("no datagram through the tunnel")
			}
			const total = 3000
			got := make(chan []uint32, 1)
			go func() {
				var seqs []uint32
				for len(seqs) < total {
					_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, _, err := srv.ReadFrom(buf)
					if err != nil {
						break // the rest was lost
					}
					if n >= 4 && binary.BigEndian.Uint32(buf) != math.MaxUint32 {
						seqs = append(seqs, binary.BigEndian.Uint32(buf))
					}
				}
				got <- seqs
			}()
			// Bursts of 1, 2, ... 97 datagrams back to back: batches of every size on both sides.
			for seq, burst := 0, 1; seq < total; burst = burst%97 + 1 {
				for range burst {
					if seq == total {
						break
					}
					binary.BigEndian.PutUint32(msg, uint32(seq))
					if _, err := c.Write(msg[:100+seq%1100]); err != nil {
						t.Fatal(err)
					}
					seq++
				}
			}
			var seqs []uint32
			select {
			case seqs = <-got:
			case <-time.After(testTimeout):
				t.Fatal("receiver did not finish")
			}
			for i := 1; i < len(seqs); i++ {
				if seqs[i] <= seqs[i-1] {
					t.Fatalf("datagram %d arrived after %d (position %d of %d): reordered", seqs[i], seqs[i-1], i, len(seqs))
				}
			}
			if len(seqs) < total/2 {
				t.Fatalf("only %d of %d datagrams arrived", len(seqs), total)
			}
			t.Logf("%d of %d datagrams, in order", len(seqs), total)
		})
	}
}
