package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// newPayloadServer serves GET /data?seed=S&n=N (testutil.Payload) and POST /sum (sha256 and length
// of the body).
func newPayloadServer() *httptest.Server { return httptest.NewServer(payloadHandler) }

// newPayloadServerTLS is newPayloadServer over TLS, for CONNECT.
func newPayloadServerTLS() *httptest.Server { return httptest.NewTLSServer(payloadHandler) }

var payloadHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/data":
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, testutil.Payload(seed, n))
	case "/sum":
		sum, n, err := testutil.Sum(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d", sum, n)
	default:
		http.NotFound(w, r)
	}
})
