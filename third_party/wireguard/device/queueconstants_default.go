//go:build !android && !ios && !windows

/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import "github.com/warren-tunnel/warren/third_party/wireguard/conn"

const (
	QueueStagedSize    = conn.IdealBatchSize
	QueueOutboundSize  = 1024
	QueueInboundSize   = 1024
	QueueHandshakeSize = 1024
	// Warren: room for the largest packet of the largest MTU Warren allows (9,000) with
	// WireGuard's header, padding and tag; upstream (1 << 16) - 1, the largest possible UDP
	// datagram, which made every buffer 64 KiB for packets of at most a few KiB.
	MaxSegmentSize             = 9216
	PreallocatedBuffersPerPool = 0 // Disable and allow for infinite memory growth
)
