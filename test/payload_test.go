package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
)

// payload yields n deterministic pseudo-random bytes for seed; both ends can regenerate it.
func payload(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(chacha{mrand.NewChaCha8(key)}, n)
}

type chacha struct{ r *mrand.ChaCha8 }

func (c chacha) Read(p []byte) (int, error) { return c.r.Read(p) }

func sumOf(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func expectedSum(seed uint64, n int64) string {
	s, _, _ := sumOf(payload(seed, n))
	return s
}

// newPayloadServer serves GET /data?seed=S&n=N (the payload) and POST /sum (sha256 and length of the body).
func newPayloadServer() *httptest.Server { return httptest.NewServer(payloadHandler) }

// newPayloadServerTLS is newPayloadServer over TLS, for CONNECT.
func newPayloadServerTLS() *httptest.Server { return httptest.NewTLSServer(payloadHandler) }

var payloadHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/data":
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, payload(seed, n))
	case "/sum":
		sum, n, err := sumOf(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d", sum, n)
	default:
		http.NotFound(w, r)
	}
})
