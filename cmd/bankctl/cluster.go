package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lockbank/lockbank/internal/pglocal"
)

// node is one bankd, and the means to freeze, resume and kill it.
type node struct {
	name string
	url  string
	api  *client

	proc    *os.Process // an own child process, or nil
	docker  string      // its container, or ""
	respawn func() (*os.Process, error)
}

// cluster is the nodes a scenario runs against.
type cluster struct {
	nodes   []*node
	own     bool
	pgURL   string // the own cluster's database
	pg      *pglocal.Server
	cleanup []func()
}

func (c *cluster) close() {
	for i := len(c.cleanup) - 1; i >= 0; i-- {
		c.cleanup[i]()
	}
}

func openCluster(ctx context.Context, f commonFlags, tl *timeline) (*cluster, error) {
	if f.targets == "" {
		return startOwnCluster(ctx, f.leaseTTL, f.nodes, tl)
	}
	c := &cluster{}
	for i, u := range strings.Split(f.targets, ",") {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		n := &node{url: u, api: newClient(u)}
		name, err := n.api.nodeName(ctx)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", u, err)
		}
		n.name = name
		if i == 0 {
			n.docker = f.docker
		}
		c.nodes = append(c.nodes, n)
	}
	// Two nodes tell every story but bench's, which loads whatever it gets.
	if need := min(f.nodes, 2); len(c.nodes) < need {
		return nil, usageError("--targets needs %d nodes (node-a first)", need)
	}
	return c, nil
}

// startOwnCluster starts a private PostgreSQL and two bankd processes, node-a
// and node-b, in demo mode on free loopback ports.
func startOwnCluster(ctx context.Context, leaseTTL time.Duration, nodes int, tl *timeline) (*cluster, error) {
	c := &cluster{own: true}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	dir, err := os.MkdirTemp("", "bankctl-*")
	if err != nil {
		return nil, err
	}
	c.cleanup = append(c.cleanup, func() { os.RemoveAll(dir) })
	// The server may run as the postgres OS user (when we are root): let it in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	bankd, err := findBankd(ctx, dir)
	if err != nil {
		return nil, err
	}
	names := []string{"node-a", "node-b", "node-c"}[:nodes]
	tl.note("starting an own cluster: PostgreSQL, %s (demo mode, lease TTL %s)", strings.Join(names, ", "), leaseTTL)
	// Room for three nodes' pools and bench's raw-SQL baseline at 256 clients.
	pg, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(dir, "pgdata"), Settings: []string{"max_connections=400"}})
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL for the own cluster: %w (or pass --targets)", err)
	}
	c.cleanup = append(c.cleanup, func() { _ = pg.Stop(context.Background()) })
	if err := pg.CreateDatabase(ctx, "lockbank"); err != nil {
		return nil, err
	}
	c.pg, c.pgURL = pg, pg.URL("lockbank")
	for _, name := range names {
		n, err := startBankd(ctx, bankd, name, c.pgURL, leaseTTL, dir)
		if err != nil {
			return nil, err
		}
		c.cleanup = append(c.cleanup, func() { stopProcess(n.proc) })
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.api.waitReady(ctx, 60*time.Second); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, n.name+".log"))
			return nil, fmt.Errorf("%s did not become ready: %w\n%s", n.name, err, log)
		}
	}
	ok = true
	return c, nil
}

func startBankd(ctx context.Context, bin, name, databaseURL string, leaseTTL time.Duration, dir string) (*node, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	wait := (leaseTTL*3 + 2*time.Second).String()
	args := []string{"--addr", addr, "--database-url", databaseURL, "--node-name", name, "--unsafe-demo",
		"--lease-ttl", leaseTTL.String(), "--lease-wait", wait,
		// The row lock's lease is as long as the lease's, and a waiter waits it out.
		"--row-lock-ttl", leaseTTL.String(), "--lock-timeout", wait}
	spawn := func() (*os.Process, error) {
		logFile, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		defer logFile.Close()
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		// Its own process group: a Ctrl-C meant for bankctl is bankctl's to handle.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		go func() { _ = cmd.Wait() }() // reap it whenever it exits
		return cmd.Process, nil
	}
	proc, err := spawn()
	if err != nil {
		return nil, err
	}
	url := "http://" + addr
	n := &node{name: name, url: url, api: newClient(url), proc: proc}
	// A killed node comes back on the same address, as a restarted service would.
	n.respawn = spawn
	return n, nil
}

func stopProcess(p *os.Process) {
	_ = p.Signal(syscall.SIGCONT) // a frozen process cannot act on SIGTERM
	_ = p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = p.Kill()
}

// findBankd looks for the bankd binary next to bankctl's own executable, then
// on PATH, then builds it from the source checkout bankctl runs in (so that
// `go run ./cmd/bankctl` works).
func findBankd(ctx context.Context, dir string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "bankd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("bankd"); err == nil {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", errors.New("no bankd next to bankctl or on PATH, and not in a lockbank source checkout to build it: " + err.Error())
	}
	out := filepath.Join(dir, "bankd")
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/bankd")
	build.Dir = root
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build bankd: %v\n%s", err, msg)
	}
	return out, nil
}

// moduleRoot finds the lockbank checkout around the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(mod), "module github.com/lockbank/lockbank\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/lockbank/lockbank above the working directory")
		}
		dir = parent
	}
}

// freeze stops the node as a whole (SIGSTOP, or docker pause): it keeps its
// lease, its connections and its in-flight request, and does nothing.
func (n *node) freeze(ctx context.Context) error {
	switch {
	case n.proc != nil:
		return n.proc.Signal(syscall.SIGSTOP)
	case n.docker != "":
		return dockerCmd(ctx, "pause", n.docker)
	}
	return errors.New(n.name + " can be frozen only in an own cluster or with --docker")
}

func (n *node) resume(ctx context.Context) error {
	switch {
	case n.proc != nil:
		return n.proc.Signal(syscall.SIGCONT)
	case n.docker != "":
		return dockerCmd(ctx, "unpause", n.docker)
	}
	return errors.New(n.name + " can be resumed only in an own cluster or with --docker")
}

// kill ends the node at once (SIGKILL, or docker kill): no release, no cleanup.
func (n *node) kill(ctx context.Context) error {
	switch {
	case n.proc != nil:
		return n.proc.Kill()
	case n.docker != "":
		return dockerCmd(ctx, "kill", n.docker)
	}
	return errors.New(n.name + " can be killed only in an own cluster or with --docker")
}

// restart brings a killed node back: its container, or its process on the
// same address.
func (n *node) restart(ctx context.Context) error {
	switch {
	case n.docker != "":
		return dockerCmd(ctx, "start", n.docker)
	case n.respawn != nil:
		p, err := n.respawn()
		if err != nil {
			return err
		}
		n.proc = p
		return n.api.waitReady(ctx, 30*time.Second)
	}
	return nil
}

func dockerCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
