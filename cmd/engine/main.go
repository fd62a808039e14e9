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
	case "check":
		code = check(os.Args[2:])
	case "keygen":
		code = keygen(os.Args[2:])
	case "certify":
		code = certify(os.Args[2:])
	case "version", "--version":
		code = version(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		if _, ok := cliCommands[os.Args[1]]; ok {
			code = cli(os.Args[1], os.Args[2:])
			break
		}
		fmt.Fprintf(os.Stderr, "engine: unknown command %q\n", os.Args[1])
		usage()
		code = exitUsage
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  engine demo [--socks ADDR] [--http ADDR] [--admin ADDR] [--log-level LEVEL]
      embedded NATS, one exit and one tunnel in this process; proxies on 127.0.0.1:1080 and :8080,
      admin API and status page on 127.0.0.1:9090 (--admin off: none)
  engine run --config FILE [--log-level LEVEL]
      an exit, client tunnels and/or a pool as FILE (YAML) says, against the configured NATS;
      admin API on 127.0.0.1:9090 (admin.listen); SIGHUP reloads FILE
  engine check --config FILE
      check FILE as engine run would (every wg-quick file it names included), start nothing:
      exit 0 and say what it holds, or exit 2 naming the field at fault
  engine keygen [--identity | --operator]
      print a WireGuard key pair (or, with --identity, an engine identity; with --operator, an
      operator key that signs certificates)
  engine certify --operator-key FILE --kind exit|client [--exit-id ID] --identity CLIENT_ID [--valid 8760h]
      sign a certificate that binds an exit id (or a client) to an engine identity
  engine version [--json]
      print Warren's version, the Go it was built with and its VCS revision

commands of a running engine, over its admin API (--admin ADDR or $WARREN_ADMIN, default
127.0.0.1:9090; --token TOKEN or $WARREN_ADMIN_TOKEN; --json for JSON instead of a table):
  engine status                          version, role, NATS, exit, tunnels, pool, readiness
  engine tunnels | engine tunnel NAME    tunnels: state, exit, age, connections, bytes, proxies
  engine connections [TUNNEL]            active connections: source, target, age, bytes
  engine exits                           the exit directory
  engine close NAME [--drain 5s]         close a tunnel (after its drain)
  engine switch NAME EXIT [--drain 5s]   move a tunnel to another exit, make-before-break
  engine reconnect NAME                  renew a tunnel's session with its exit
  engine pool | pool resize N | pool rotate [SLOT...]
  engine reload                          re-read the config file and apply the difference
  engine drain-exit                      drain this engine's exit and stop it
`)
}
