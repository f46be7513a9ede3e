package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/wait"
)

// Node is one bankd and the means to freeze, resume, kill and restart it:
// signals to its own child process, or docker commands to its container.
type Node struct {
	Name string
	URL  string
	API  *client.Client

	docker string                                       // its container, or ""
	spawn  func() (*os.Process, <-chan struct{}, error) // an own process's start; nil for a target

	mu     sync.Mutex
	proc   *os.Process
	exited <-chan struct{} // closed when proc has exited and been reaped
}

// NodeOptions say how to run a bankd process.
type NodeOptions struct {
	Binary      string // the bankd executable (see Bankd, Build)
	Name        string // --node-name: the holder name of its leases
	DatabaseURL string
	// Args are more flags, after --addr (a free loopback port),
	// --database-url and --node-name.
	Args []string
	// Log receives the process's stdout and stderr; nil discards them.
	Log io.Writer
	// Transport, if set, wraps the transport of the node's API client: for
	// tests, which hold every answer to the OpenAPI document
	// (internal/contract.Transport).
	Transport func(http.RoundTripper) http.RoundTripper
}

// StartNode runs bankd as a child process in its own process group (so
// that a Ctrl-C meant for the caller is the caller's to handle), and waits
// until it is ready (/readyz) or a minute has passed. A node that is
// killed comes back on the same address, as a restarted service would.
func StartNode(ctx context.Context, o NodeOptions) (*Node, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--addr", addr, "--database-url", o.DatabaseURL, "--node-name", o.Name}, o.Args...)
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	url := "http://" + addr
	n := &Node{Name: o.Name, URL: url, API: newAPI(url, o.Transport)}
	n.spawn = func() (*os.Process, <-chan struct{}, error) {
		cmd := exec.Command(o.Binary, args...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, nil, fmt.Errorf("start %s: %w", o.Name, err)
		}
		exited := make(chan struct{})
		go func() { // reap it whenever it exits
			_ = cmd.Wait()
			close(exited)
		}()
		return cmd.Process, exited, nil
	}
	if err := n.startProcess(); err != nil {
		return nil, err
	}
	if err := WaitReady(ctx, n.API, time.Minute, n.exitedChan()); err != nil {
		n.Stop()
		return nil, fmt.Errorf("%s did not become ready: %w", o.Name, err)
	}
	return n, nil
}

// newAPI is a client for one node, keeping many connections: a race
// releases up to a thousand clients at once.
// wrap, if not nil, wraps its transport.
func newAPI(url string, wrap func(http.RoundTripper) http.RoundTripper) *client.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	var rt http.RoundTripper = tr
	if wrap != nil {
		rt = wrap(tr)
	}
	return client.New(url, client.WithHTTPClient(&http.Client{Transport: rt, Timeout: 2 * time.Minute}))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// LogBuffer collects a process's output (NodeOptions.Log) as it comes, for
// a test to show when it fails. It is safe for concurrent use.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (n *Node) startProcess() error {
	p, exited, err := n.spawn()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc, n.exited = p, exited
	n.mu.Unlock()
	return nil
}

func (n *Node) process() (*os.Process, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc, n.exited
}

func (n *Node) exitedChan() <-chan struct{} {
	_, exited := n.process()
	return exited
}

// Own reports whether the node is a child process of this one.
func (n *Node) Own() bool { return n.spawn != nil }

// Docker is the node's container name, or "".
func (n *Node) Docker() string { return n.docker }

// PID is the process id of an own node, else 0.
func (n *Node) PID() int {
	if p, _ := n.process(); p != nil {
		return p.Pid
	}
	return 0
}

// Stop ends an own node: SIGCONT (a frozen process cannot act on
// SIGTERM), SIGTERM, and after 10 s SIGKILL. It returns once the process
// has exited.
func (n *Node) Stop() {
	p, exited := n.process()
	if p == nil {
		return
	}
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = p.Kill()
	<-exited
}

// Freeze stops the node as a whole (SIGSTOP, or docker pause): it keeps its
// leases, its connections and its requests in flight, and does nothing.
func (n *Node) Freeze(ctx context.Context) error {
	if err := n.act(ctx, "frozen", syscall.SIGSTOP, "pause"); err != nil {
		return err
	}
	// kill(2) only queues the signal: wait until the kernel has stopped
	// the process, so that nothing it does after Freeze returns is the
	// frozen node's.
	if p, _ := n.process(); p != nil {
		return wait.Poll(ctx, 5*time.Second, time.Millisecond, func() bool { return stopped(p.Pid) })
	}
	return nil
}

// stopped reports whether every thread of process pid is stopped (state T
// in /proc/<pid>/task/<tid>/stat): a Go process serves requests on many.
func stopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, stat := range stats {
		if processState(stat) != 'T' {
			return false
		}
	}
	return len(stats) > 0
}

// processState is the state letter in a /proc/<pid>/stat file (T: stopped),
// or 0 when it cannot be read.
func processState(stat string) byte {
	b, err := os.ReadFile(stat)
	if err != nil {
		return 0
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold spaces or parentheses: read after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// Resume lets a frozen node go on (SIGCONT, or docker unpause).
func (n *Node) Resume(ctx context.Context) error {
	return n.act(ctx, "resumed", syscall.SIGCONT, "unpause")
}

// Kill ends the node at once (SIGKILL, or docker kill): no release, no
// cleanup. An own process has exited when it returns.
func (n *Node) Kill(ctx context.Context) error {
	if err := n.act(ctx, "killed", syscall.SIGKILL, "kill"); err != nil {
		return err
	}
	if exited := n.exitedChan(); exited != nil {
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s did not exit after SIGKILL", n.Name)
		}
	}
	return nil
}

func (n *Node) act(ctx context.Context, what string, sig syscall.Signal, docker string) error {
	p, _ := n.process()
	switch {
	case p != nil:
		return p.Signal(sig)
	case n.docker != "":
		return dockerCmd(ctx, docker, n.docker)
	}
	return errors.New(n.Name + " can be " + what + " only in an own cluster or with --docker")
}

// Restart brings a killed node back: its container (docker start), or its
// process on the same address, and waits until it is ready. A node that
// is neither is left alone.
func (n *Node) Restart(ctx context.Context) error {
	switch {
	case n.docker != "":
		return dockerCmd(ctx, "start", n.docker)
	case n.spawn != nil:
		if err := n.startProcess(); err != nil {
			return err
		}
		return WaitReady(ctx, n.API, 30*time.Second, n.exitedChan())
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
