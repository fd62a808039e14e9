package actors

import (
	"errors"
	"strconv"
	"syscall"
)

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
