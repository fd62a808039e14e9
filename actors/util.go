package actors

import (
	"strconv"
)

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
