// Package pgbouncer runs a private PgBouncer in transaction pooling mode in
// front of a PostgreSQL server, on 127.0.0.1, for tests and bankctl's own
// cluster: the deployment many production servers have, where a client's
// transactions may each run on another server connection, so LISTEN, session
// advisory locks, session settings and server-side prepared statements do
// not carry from one transaction to the next.
package pgbouncer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinary says the pgbouncer program is not installed (Debian package
// pgbouncer).
var ErrNoBinary = errors.New("pgbouncer: no pgbouncer binary (apt-get install pgbouncer)")

// Options configure a Bouncer.
type Options struct {
	// Backend is the URL of the server to pool (its host, port, user and
	// password; every database name is passed through).
	Backend string
	// PoolSize is the number of server connections per database and user:
	// small, so that a client's transactions really do hop between them.
	// Default 4.
	PoolSize int
	// MaxClients is max_client_conn. Default 400.
	MaxClients int
}

// Bouncer is a running PgBouncer.
type Bouncer struct {
	port    int
	dir     string
	backend *pgconn.Config
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Binary returns the path of the pgbouncer program, or ErrNoBinary.
func Binary() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoBinary
}

// Start writes a config to a temporary directory and runs pgbouncer on a
// free port of 127.0.0.1 in transaction pooling mode, waiting until it
// accepts connections. Clients log in with any user name and no password
// (auth_type any): pgbouncer logs in to the backend as Backend's user. As
// root it runs as the postgres OS user, since pgbouncer refuses root.
func Start(ctx context.Context, o Options) (_ *Bouncer, err error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	backend, err := pgconn.ParseConfig(o.Backend)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: backend url: %w", err)
	}
	if o.PoolSize == 0 {
		o.PoolSize = 4
	}
	if o.MaxClients == 0 {
		o.MaxClients = 400
	}
	dir, err := os.MkdirTemp("", "pgbouncer-*")
	if err != nil {
		return nil, err
	}
	b := &Bouncer{dir: dir, backend: backend, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			b.Stop()
		}
	}()
	if b.port, err = freePort(); err != nil {
		return nil, err
	}
	// server_reset_query is empty, as PgBouncer advises for transaction
	// mode: a client must leave nothing behind on a server connection.
	conf := fmt.Sprintf(`[databases]
* = host=%s port=%d user=%s password=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = %d
max_client_conn = %d
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = %s
`, backend.Host, backend.Port, quote(backend.User), quote(backend.Password), b.port, o.PoolSize, o.MaxClients, filepath.Join(dir, "pgbouncer.log"))
	confPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	b.cmd = exec.Command(bin, confPath)
	if os.Geteuid() == 0 {
		if err := handTo("postgres", dir, confPath); err != nil {
			return nil, err
		}
		b.cmd = exec.Command("runuser", "-u", "postgres", "--", bin, confPath)
	}
	// Its own process group, so that Stop ends runuser and pgbouncer both.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgbouncer: start: %w", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	if err := b.waitReady(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return b, nil
}

// waitReady polls until a client gets through to the backend.
func (b *Bouncer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		select {
		case <-b.exited:
			return errors.New("pgbouncer: exited at start")
		default:
		}
		conn, err := pgx.Connect(ctx, b.URL(b.backend.Database))
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgbouncer: not ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL is a URL for database dbname through the pooler, with pgx's exec mode
// (default_query_exec_mode=exec, which pgx reads from the URL): no statement
// is prepared on the server, where the next transaction would not find it.
func (b *Bouncer) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("bouncer"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable&default_query_exec_mode=exec",
	}
	return u.String()
}

// Port is the port pgbouncer listens on, on 127.0.0.1.
func (b *Bouncer) Port() int { return b.port }

// Stop ends pgbouncer (SIGTERM to its process group, SIGKILL after 5 s) and
// removes its directory.
func (b *Bouncer) Stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			<-b.exited
		}
	}
	os.RemoveAll(b.dir)
}

// quote makes a value safe in pgbouncer's connect string.
func quote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`) + "'"
}

// handTo gives the directory and config to the OS user that will run
// pgbouncer.
func handTo(name string, paths ...string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("pgbouncer: running as root needs the %q OS user: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return os.Chmod(paths[0], 0o755)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
