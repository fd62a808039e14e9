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

// InitiateHandshakes sends every peer a handshake initiation now, even if one went out less than
// RekeyTimeout ago (SendHandshakeInitiation would skip it): a probe that must see the server
// answer within its own timeout cannot wait for WireGuard's next retry. The responder accepts it
// (its timestamp is newer); the keys in use stay valid until the new ones are confirmed.
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
		peer.handshake.lastSentHandshake = time.Time{}
		peer.handshake.mutex.Unlock()
		_ = peer.SendHandshakeInitiation(false)
	}
}
