package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/signaling"
)

// certify signs an exit or client certificate with an operator key read from a file (never from
// the command line, where it would land in shell history and process listings).
func certify(args []string) int {
	fs := flag.NewFlagSet("certify", flag.ContinueOnError)
	keyFile := fs.String("operator-key", "", "file holding the operator key (engine keygen --operator)")
	kind := fs.String("kind", signaling.CertExit, "certificate kind: exit or client")
	exitID := fs.String("exit-id", "", "the exit id the certificate binds (kind exit)")
	identity := fs.String("identity", "", "the certified engine's client_id (engine keygen --identity prints it)")
	valid := fs.Duration("valid", 365*24*time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *keyFile == "" || *identity == "" {
		fmt.Fprintln(os.Stderr, "engine certify: --operator-key and --identity are required")
		return exitUsage
	}
	data, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine certify: --operator-key:", err)
		return exitUsage
	}
	key, err := signaling.ParseOperatorKey(operatorSeed(string(data)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine certify: --operator-key:", err)
		return exitUsage
	}
	cert, err := key.Certify(*kind, *exitID, *identity, *valid, time.Now())
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine certify:", err)
		return exitUsage
	}
	fmt.Printf("certificate: %s\noperator: %s\nexpires: %s\n", cert, key.Public(), time.Now().Add(*valid).UTC().Format(time.RFC3339))
	return exitOK
}

// operatorSeed takes the seed from a key file: the bare seed, or keygen's "operator_key: …" line.
func operatorSeed(file string) string {
	for _, line := range strings.Split(file, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "operator_key:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return strings.TrimSpace(file)
}
