package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
)

// Payload yields n deterministic pseudo-random bytes for seed (ChaCha8 keyed with seed's eight
// little-endian bytes); both ends of a transfer can regenerate it.
func Payload(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(chacha{mrand.NewChaCha8(key)}, n)
}

type chacha struct{ r *mrand.ChaCha8 }

func (c chacha) Read(p []byte) (int, error) { return c.r.Read(p) }

// PayloadBytes is Payload(seed, n) in memory.
func PayloadBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(Payload(seed, int64(n)), b); err != nil {
		panic(err) // a ChaCha8 stream does not fail
	}
	return b
}

// Sum reads r to its end and returns the hex sha256 of what it read, how many bytes that was, and
// the read error (nil at EOF).
func Sum(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// PayloadSum is the hex sha256 of Payload(seed, n).
func PayloadSum(seed uint64, n int64) string {
	s, _, _ := Sum(Payload(seed, n))
	return s
}

// CheckPayload reads r to its end and checks that it carried exactly Payload(seed, n); the error
// says how many bytes came, and their sha256, when it did not.
func CheckPayload(r io.Reader, seed uint64, n int64) error {
	sum, got, err := Sum(r)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", got, err)
	}
	if want := PayloadSum(seed, n); got != n || sum != want {
		return fmt.Errorf("got %d bytes sha256 %s, want %d bytes sha256 %s", got, sum, n, want)
	}
	return nil
}
