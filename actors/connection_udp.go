package actors

import "time"

// UDPLimits are a tunnel's SOCKS5 UDP association settings.
type UDPLimits struct {
	Disabled        bool          // UDP ASSOCIATE is refused (0x07)
	Idle            time.Duration // no datagram either way for this long ends an association
	MaxAssociations int           // at once per tunnel; 0 unlimited
}
