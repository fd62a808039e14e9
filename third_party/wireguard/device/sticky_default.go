//go:build !linux

package device

import (
	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
	"github.com/warren-tunnel/warren/third_party/wireguard/rwcancel"
)

func (device *Device) startRouteListener(_ conn.Bind) (*rwcancel.RWCancel, error) {
	return nil, nil
}
