package device

// Warren: InitiateHandshakes and AwaitHandshake let a client prove that a standard WireGuard
// server answers (the first handshake of a tunnel to it, and its health probes), by waiting for
// the event rather than polling LastHandshake.

import (
	"context"
	"sync"
	"time"
)

// handshakeSignal wakes AwaitHandshake callers when a handshake completes.
type handshakeSignal struct {
	mu sync.Mutex
	ch chan struct{} // closed on the next completed handshake; nil while nobody waits
}

// completed is called by timersHandshakeComplete after lastHandshakeNano was stored.
func (s *handshakeSignal) completed() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

// AwaitHandshake returns nil once a handshake with any peer has completed after the time after
// (at once if one already has), or ctx's error when it ends first.
func (device *Device) AwaitHandshake(ctx context.Context, after time.Time) error {
	s := &device.handshakeSignal
	for {
		s.mu.Lock()
		if device.lastHandshakeNano.Load() > after.UnixNano() {
			s.mu.Unlock()
			return nil
		}
		if s.ch == nil {
			s.ch = make(chan struct{})
		}
		ch := s.ch
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// initiationSpacing: InitiateHandshakes leaves alone a peer whose last initiation went out less
// than this ago. A responder drops a peer's initiations that come less than HandshakeInitationRate
// (20 ms) after the last one it took, and those whose TAI64N timestamp (whitened to 2^24 ns, about
// 17 ms) is not newer; and an initiator answers only its latest initiation. A second initiation
// right after the first (the persistent keepalive's, when a peer is added) would be dropped by
// the server and make the client ignore the answer to the first: no handshake for RekeyTimeout.
const initiationSpacing = 50 * time.Millisecond

// InitiateHandshakes sends every peer a handshake initiation now, even if one went out less than
// RekeyTimeout ago (SendHandshakeInitiation would skip it) — unless one went out less than
// initiationSpacing ago, whose answer is awaited instead: a probe that must see the server answer
// within its own timeout cannot wait for WireGuard's next retry. The responder accepts it (its
// timestamp is newer); the keys in use stay valid until the new ones are confirmed.
func (device *Device) InitiateHandshakes() {
	device.peers.RLock()
	peers := make([]*Peer, 0, len(device.peers.keyMap))
	for _, peer := range device.peers.keyMap {
		peers = append(peers, peer)
	}
	device.peers.RUnlock()
	for _, peer := range peers {
		if !peer.isRunning.Load() {
			continue
		}
		peer.handshake.mutex.Lock()
		if time.Since(peer.handshake.lastSentHandshake) < initiationSpacing {
			peer.handshake.mutex.Unlock()
			continue
		}
		peer.handshake.lastSentHandshake = time.Time{}
		peer.handshake.mutex.Unlock()
		_ = peer.SendHandshakeInitiation(false)
	}
}
