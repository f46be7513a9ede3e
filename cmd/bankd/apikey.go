package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/lockbank/lockbank/apikey"
)

// runAPIKey is `bankd apikey new --name NAME --role admin|client`: it makes
// a key and prints it once, with the line of the keys file that names it by
// its hash. bankd never sees the key again: store it where its user keeps
// secrets.
func runAPIKey(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		return errors.New("usage: bankd apikey new --name NAME --role admin|client")
	}
	fs := flag.NewFlagSet("bankd apikey new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the key's name: 1 to 64 characters of A-Z a-z 0-9 . _ - (it owns the accounts and leases the key makes)")
	role := fs.String("role", string(apikey.RoleClient), "admin (every account) or client (only its own)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	secret, line, err := apikey.New(*name, apikey.Role(*role))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key: %s\nline: %s\n", secret, line)
	fmt.Fprintln(stderr, "bankd apikey: the key is shown only this once; bankd keeps only its hash.\n"+
		"Give the key to its user, and add the line to the file named by --api-keys-file (BANKD_API_KEYS_FILE).")
	return nil
}

// warnIfOpen warns when bankd listens beyond this machine with no keys:
// anyone who can reach it can then read and drain every account.
func warnIfOpen(logger *slog.Logger, addr net.Addr, keys *apikey.Set) {
	if keys != nil {
		return
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return
	}
	logger.Warn("bankd listens beyond this machine without API keys: anyone who can reach "+addr.String()+
		" can read and drain every account; set --api-keys-file (BANKD_API_KEYS_FILE), or listen on 127.0.0.1", "addr", addr.String())
}
