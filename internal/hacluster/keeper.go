package hacluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lockbank/lockbank/internal/wait"
)

// keeper is one `pg_autoctl run` process: the monitor's, or a data node's
// keeper, which runs its postmaster as a child in the same process group.
type keeper struct {
	pgdata string
	port   int
	log    string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// run starts `pg_autoctl run` on pgdata in a process group of its own,
// logging to <dir>/<name>.log.
func (c *Cluster) run(pgdata, name string, port int) (*keeper, error) {
	k := &keeper{pgdata: pgdata, port: port, log: filepath.Join(c.dir, name+".log")}
	if err := c.start(k); err != nil {
		return nil, err
	}
	return k, nil
}

func (c *Cluster) start(k *keeper) error {
	log, err := os.OpenFile(k.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := c.command(context.Background(), "pg_autoctl", "run", "--pgdata", k.pgdata)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("hacluster: pg_autoctl run %s: %w", k.pgdata, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
	k.mu.Lock()
	k.cmd, k.exited = cmd, exited
	k.mu.Unlock()
	return nil
}

// kill ends the keeper the way a crash of its machine would: SIGKILL to its
// process group (the keeper, its services and the postmaster with every
// backend), and to the postmaster again by its pid file, in case it left
// the group. It returns once the keeper has been reaped and the
// postmaster is gone.
func (k *keeper) kill() {
	if k == nil {
		return
	}
	k.mu.Lock()
	cmd, exited := k.cmd, k.exited
	k.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if pid := postmasterPID(k.pgdata); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-exited
	// The postmaster's parent (a keeper service) is dead too, so init reaps
	// it; until then it is a zombie, which holds no port and no file.
	if pid := postmasterPID(k.pgdata); pid > 0 {
		_ = wait.Poll(context.Background(), 10*time.Second, 10*time.Millisecond, func() bool {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			return err != nil || strings.Contains(string(st), ") Z ")
		})
	}
}

// autoctl runs a pg_autoctl command to its end.
func (c *Cluster) autoctl(ctx context.Context, args ...string) error {
	out, err := c.command(ctx, "pg_autoctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hacluster: pg_autoctl %s: %w\n%s", strings.Join(args, " "), err, lastLines(string(out), 20))
	}
	return nil
}

// command runs name as the postgres OS user (when we are root), in our
// environment, in a process group of its own.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return cmd
}

func (c *Cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	return os.Chown(path, uid, gid)
}

// postmasterPID reads the first line of pgdata/postmaster.pid; 0 if none.
func postmasterPID(pgdata string) int {
	f, err := os.Open(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		pid, _ := strconv.Atoi(strings.TrimSpace(sc.Text()))
		return pid
	}
	return 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
