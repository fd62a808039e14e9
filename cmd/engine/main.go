// Command engine runs Warren: a demo in one process, a configured exit and/or client tunnels, or key generation.
package main

import (
	"fmt"
	"os"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1   // the engine could not start or failed while running
	exitUsage   = 2   // bad command line or config
	exitForced  = 130 // a second signal cut the graceful shutdown short
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(exitUsage)
	}
	var code int
	switch os.Args[1] {
	case "demo":
		code = demo(os.Args[2:])
	case "run":
		code = run(os.Args[2:])
	case "keygen":
		code = keygen(os.Args[2:])
	case "certify":
		code = certify(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "engine: unknown command %q\n", os.Args[1])
		usage()
		code = exitUsage
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  engine demo [--socks ADDR] [--http ADDR] [--log-level LEVEL]
      embedded NATS, one exit and one tunnel in this process; proxies on 127.0.0.1:1080 and :8080
  engine run --config FILE
      an exit and/or client tunnels as FILE (YAML) says, against the configured NATS
  engine keygen [--identity | --operator]
      print a WireGuard key pair (or, with --identity, an engine identity; with --operator, an
      operator key that signs certificates)
  engine certify --operator-key FILE --kind exit|client [--exit-id ID] --identity CLIENT_ID [--valid 8760h]
      sign a certificate that binds an exit id (or a client) to an engine identity
`)
}
