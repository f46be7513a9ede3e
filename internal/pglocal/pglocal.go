// Package pglocal runs a private PostgreSQL server from the server binaries
// installed on this machine, so that bankd, bankctl and the tests work with no
// setup: initdb on first use, a free port on 127.0.0.1, reused on the next start.
//
// initdb and postgres refuse to run as root; when the caller is root, every
// server process runs as the "postgres" OS user instead.
package pglocal

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is returned by Start when no PostgreSQL server binaries can be found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under /usr/lib/postgresql/*/bin")

// Superuser is the name of the superuser that initdb creates.
const Superuser = "lockbank"

// Options configure Start.
type Options struct {
	// DataDir is the cluster directory. It is created and initialised when
	// missing or empty, and reused as it is otherwise.
	DataDir string
	// Settings are extra server settings as name=value, e.g. "fsync=off".
	Settings []string
	// Logger receives one line for each thing Start does. Nil discards.
	Logger *slog.Logger
}

// Server is a running private PostgreSQL cluster.
type Server struct {
	binDir   string
	dataDir  string
	port     int
	password string
	runAs    string // OS user for server processes; "" for the current user
	settings []string
	logger   *slog.Logger
}

// Start initialises opts.DataDir if needed and starts a server on a free
// loopback port, or attaches to the server already running on that directory
// (left behind by a process that was killed). It returns ErrNoBinaries when
// PostgreSQL is not installed.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{binDir: binDir, dataDir: dataDir, logger: logger}
	if os.Geteuid() == 0 {
		s.runAs = "postgres"
		if _, err := user.Lookup(s.runAs); err != nil {
			return nil, fmt.Errorf("pglocal: running as root needs the %q OS user to run PostgreSQL: %w", s.runAs, err)
		}
	}
	if err := s.initIfEmpty(ctx); err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(s.passwordFile())
	if err != nil {
		return nil, fmt.Errorf("pglocal: read password: %w", err)
	}
	s.password = strings.TrimSpace(string(pw))

	if port, ok := s.runningPort(ctx); ok {
		s.port = port
		logger.Info("reusing PostgreSQL already running on its data directory", "data_dir", dataDir, "port", port)
		return s, nil
	}
	s.settings = opts.Settings
	if err := s.start(ctx, 0); err != nil {
		return nil, err
	}
	return s, nil
}

// CrashAndRestart stops the server the way a crash would (immediate mode: no
// checkpoint) and starts it again on the same port, so clients reconnect to
// the same URL after crash recovery. Fault tests use it.
func (s *Server) CrashAndRestart(ctx context.Context) error {
	if err := s.Kill(ctx); err != nil {
		return err
	}
	return s.start(ctx, s.port)
}

// FindBinDir returns the directory holding initdb and pg_ctl: the one on PATH
// if any, else the newest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// URL returns a connection URL for database dbname.
func (s *Server) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(Superuser, s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port the server listens on, on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// DataDir is the cluster directory.
func (s *Server) DataDir() string { return s.dataDir }

// CreateDatabase creates dbname unless it exists.
func (s *Server) CreateDatabase(ctx context.Context, dbname string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pglocal: connect: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dbname).Scan(&exists); err != nil {
		return fmt.Errorf("pglocal: look up database: %w", err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbname}.Sanitize())
	if err != nil {
		return fmt.Errorf("pglocal: create database %s: %w", dbname, err)
	}
	return nil
}

// Stop shuts the server down ("fast" mode: open transactions are rolled back).
func (s *Server) Stop(ctx context.Context) error {
	out, err := s.command(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", "60").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pglocal: pg_ctl stop: %w: %s", err, strings.TrimSpace(string(out)))
	}
	s.logger.Info("stopped PostgreSQL", "data_dir", s.dataDir)
	return nil
}

// Kill stops the server the way a crash would ("immediate" mode: no
// checkpoint, recovery on the next start). Fault tests use it.
func (s *Server) Kill(ctx context.Context) error {
	out, err := s.command(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "60").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pglocal: pg_ctl stop -m immediate: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// BeginSmartShutdown asks the server to stop once its open sessions have
// ended ("smart" mode) and returns at once. Until then the server refuses new
// connections with SQLSTATE 57P03 (cannot_connect_now), as a server that is
// shutting down or starting up does; fault tests use that. Stop or Kill
// finishes the shutdown.
func (s *Server) BeginSmartShutdown(ctx context.Context) error {
	out, err := s.command(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "smart", "-W").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pglocal: pg_ctl stop -m smart: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *Server) passwordFile() string { return filepath.Join(s.dataDir, "lockbank-password") }
func (s *Server) logFile() string      { return filepath.Join(s.dataDir, "lockbank-server.log") }

func (s *Server) initIfEmpty(ctx context.Context) error {
	entries, err := os.ReadDir(s.dataDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pglocal: read data dir: %w", err)
	}
	if len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err != nil {
			return fmt.Errorf("pglocal: %s is not empty and holds no PostgreSQL cluster", s.dataDir)
		}
		return nil
	}
	// Parents stay open (the server's OS user must pass through them); the
	// cluster directory itself is private, as initdb requires.
	if err := os.MkdirAll(filepath.Dir(s.dataDir), 0o755); err != nil {
		return fmt.Errorf("pglocal: create data dir: %w", err)
	}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pglocal: create data dir: %w", err)
	}
	if err := s.chown(s.dataDir); err != nil {
		return err
	}
	if s.runAs != "" {
		// The postgres user must be able to reach the directory; /root, say, is closed to it.
		if out, err := s.command(ctx, "test", "-w", s.dataDir).CombinedOutput(); err != nil {
			return fmt.Errorf("pglocal: the %q OS user cannot write %s (a parent directory is closed to it); choose a data directory it can reach: %v %s",
				s.runAs, s.dataDir, err, out)
		}
	}
	password := randomHex(16)
	// initdb reads the password from a file; it must be readable by the server's user.
	pwTmp, err := os.CreateTemp("", "lockbank-pw-*")
	if err != nil {
		return err
	}
	defer os.Remove(pwTmp.Name())
	if _, err := pwTmp.WriteString(password + "\n"); err != nil {
		return err
	}
	pwTmp.Close()
	if err := s.chown(pwTmp.Name()); err != nil {
		return err
	}
	s.logger.Info("initialising a private PostgreSQL cluster", "data_dir", s.dataDir, "bin_dir", s.binDir)
	out, err := s.command(ctx, "initdb", "-D", s.dataDir, "-U", Superuser, "--pwfile", pwTmp.Name(),
		"--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pglocal: initdb: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile(s.passwordFile(), []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	return s.chown(s.passwordFile())
}

// start runs the server on port, or on a free port when port is 0.
func (s *Server) start(ctx context.Context, port int) error {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return err
		}
	}
	// No unix socket: its path length is limited and the data dir can be deep.
	opts := []string{"-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=''"}
	for _, kv := range s.settings {
		opts = append(opts, "-c", kv)
	}
	out, err := s.command(ctx, "pg_ctl", "start", "-D", s.dataDir, "-l", s.logFile(), "-w", "-t", "60",
		"-o", strings.Join(opts, " ")).CombinedOutput()
	if err != nil {
		tail, _ := os.ReadFile(s.logFile())
		return fmt.Errorf("pglocal: pg_ctl start: %w: %s\n%s", err, strings.TrimSpace(string(out)), lastLines(string(tail), 15))
	}
	s.port = port
	s.logger.Info("started private PostgreSQL", "data_dir", s.dataDir, "addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "log", s.logFile())
	return nil
}

// runningPort reports the port of a server that already runs on the data
// directory, read from postmaster.pid (its fourth line).
func (s *Server) runningPort(ctx context.Context) (int, bool) {
	if err := s.command(ctx, "pg_ctl", "status", "-D", s.dataDir).Run(); err != nil {
		return 0, false
	}
	f, err := os.Open(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 1; sc.Scan(); i++ {
		if i == 4 {
			port, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			return port, err == nil
		}
	}
	return 0, false
}

// command runs a PostgreSQL binary (or any command) as the server's OS user.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := name
	if _, err := os.Stat(filepath.Join(s.binDir, name)); err == nil {
		path = filepath.Join(s.binDir, name)
	}
	var cmd *exec.Cmd
	if s.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	// A relative working directory could be closed to the postgres user.
	cmd.Dir = "/"
	return cmd
}

func (s *Server) chown(path string) error {
	if s.runAs == "" {
		return nil
	}
	u, err := user.Lookup(s.runAs)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("pglocal: chown %s: %w", path, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pglocal: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
