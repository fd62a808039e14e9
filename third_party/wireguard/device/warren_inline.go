/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

// Warren: inline crypto for small batches (README change 10). Upstream, every batch of packets
// goes from the goroutine that read it (the TUN reader, or a bind's receive loop) to an encryption
// or decryption worker and then to the peer's sequential sender or receiver: two handoffs, each a
// goroutine wake-up, before a packet moves on. For a bulk transfer the workers' parallelism is
// worth it; for a lone packet — a TCP handshake, a request, an ACK of a quiet connection — the
// handoff costs more than the crypto (a 1,420-byte seal takes under a microsecond) and adds tens
// of microseconds to every round trip. So a batch of at most inlineCryptoMax packets is sealed or
// opened by the goroutine that read it, and handed straight to the sequential queue, already
// unlocked; larger batches take upstream's path. Order is kept: the sequential queue still
// receives every batch in the order it was read.

import (
	"encoding/binary"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// sealElems encrypts the packets of elemsContainer in place (the work of RoutineEncryption).
func (device *Device) sealElems(elemsContainer *QueueOutboundElementsContainer, nonce *[chacha20poly1305.NonceSize]byte) {
	var paddingZeros [PaddingMultiple]byte
	for _, elem := range elemsContainer.elems {
		// populate header fields
		header := elem.buffer[:MessageTransportHeaderSize]

		fieldType := header[0:4]
		fieldReceiver := header[4:8]
		fieldNonce := header[8:16]

		binary.LittleEndian.PutUint32(fieldType, MessageTransportType)
		binary.LittleEndian.PutUint32(fieldReceiver, elem.keypair.remoteIndex)
		binary.LittleEndian.PutUint64(fieldNonce, elem.nonce)

		// pad content to multiple of 16
		paddingSize := calculatePaddingSize(len(elem.packet), int(device.tun.mtu.Load()))
		elem.packet = append(elem.packet, paddingZeros[:paddingSize]...)

		// encrypt content and release to consumer

		binary.LittleEndian.PutUint64(nonce[4:], elem.nonce)
		elem.packet = elem.keypair.send.Seal(
			header,
			nonce[:],
			elem.packet,
			nil,
		)
	}
}

// openElems decrypts the packets of elemsContainer in place (the work of RoutineDecryption); a
// packet that fails authentication gets a nil packet.
func openElems(elemsContainer *QueueInboundElementsContainer, nonce *[chacha20poly1305.NonceSize]byte) {
	for _, elem := range elemsContainer.elems {
		// split message into fields
		counter := elem.packet[MessageTransportOffsetCounter:MessageTransportOffsetContent]
		content := elem.packet[MessageTransportOffsetContent:]

		// decrypt and release to consumer
		var err error
		elem.counter = binary.LittleEndian.Uint64(counter)
		// copy counter to nonce
		binary.LittleEndian.PutUint64(nonce[0x4:0xc], elem.counter)
		elem.packet, err = elem.keypair.receive.Open(
			content[:0],
			nonce[:],
			content,
			nil,
		)
		if err != nil {
			elem.packet = nil
		}
	}
}

// sendInline hands a sealed batch to the bind from the calling goroutine when no batch is queued
// for the sequential sender before it and no one else is sending for the peer (so the peer's
// packets still leave in the order they were staged), and reports whether it did. It never waits
// for sendOrder: a holder may be the sequential sender waiting for the shared encryption workers,
// and the caller may be the device's only TUN reader, which serves every peer. Only with
// DeviceOptions.InlineSend.
func (peer *Peer) sendInline(elemsContainer *QueueOutboundElementsContainer) bool {
	if !peer.device.opts.InlineSend || !peer.sendOrder.TryLock() {
		return false
	}
	defer peer.sendOrder.Unlock()
	if peer.queuedOut.Load() != 0 {
		return false
	}
	peer.sendElems(elemsContainer, peer.device.BatchSize())
	return true
}

// receiveInline hands an opened batch to the TUN from the calling goroutine (the bind's receive
// loop) when no batch is queued for the sequential receiver before it and the batch cannot make the
// receiver send, and reports whether it did. The bind's receive loop must never wait for the bind:
// closing or updating the bind holds device.net while it waits for that loop to end, and every send
// takes device.net (SendBuffers). So a batch that may confirm a new keypair (and send the packets
// staged for it) or renew an old one (a handshake initiation) goes to the sequential receiver, and
// recvOrder is never waited for (its holder may be the sequential receiver, sending). Only with
// DeviceOptions.InlineReceive.
func (peer *Peer) receiveInline(elemsContainer *QueueInboundElementsContainer) bool {
	if !peer.device.opts.InlineReceive || peer.mayReplyTo(elemsContainer) || !peer.recvOrder.TryLock() {
		return false
	}
	defer peer.recvOrder.Unlock()
	if peer.queuedIn.Load() != 0 {
		return false
	}
	peer.receiveElems(elemsContainer, peer.device.BatchSize(), true)
	return true
}

// mayReplyTo reports whether receiving elemsContainer could make the peer send: a packet under a
// keypair other than the current one (the next one, which it confirms: the staged packets go out),
// or a current keypair old enough for keepKeyFreshReceiving to start a handshake.
func (peer *Peer) mayReplyTo(elemsContainer *QueueInboundElementsContainer) bool {
	current := peer.keypairs.Current()
	for _, elem := range elemsContainer.elems {
		if elem.keypair != current {
			return true
		}
	}
	return current == nil || !peer.timers.sentLastMinuteHandshake.Load() && current.isInitiator &&
		time.Since(current.created) > RejectAfterTime-KeepaliveTimeout-RekeyTimeout
}
