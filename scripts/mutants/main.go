// Command mutants breaks lockbank's safety guards one at a time and checks
// that a focused test in the guard's own package fails each time.
//
// For every mutant it copies the module to a scratch directory, applies the
// mutant's edits (literal replacements, each of which must match exactly
// once, so a mutant that no longer fits the code is an error rather than a
// silent pass), runs `go test -run <focused tests> <package>` there, and
// prints caught (the tests failed) or SURVIVED (they passed). It exits 1 if
// any mutant survived or could not be applied or built.
//
//	go run ./scripts/mutants            # every mutant
//	go run ./scripts/mutants -list      # the table
//	go run ./scripts/mutants -only fence
//
// The tests talk to PostgreSQL as `go test` does (internal/pgtest); set
// PGTEST_BACKEND as for any test run.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// edit replaces from, which must occur exactly once in file, by to.
type edit struct {
	file, from, to string
}

// mutant is one deliberate bug and the tests that must catch it.
type mutant struct {
	name  string // short, for -only
	what  string // the guard it removes
	edits []edit
	pkg   string // the guard's own package
	tests string // -run pattern of the focused tests
}

func main() {
	list := flag.Bool("list", false, "print the mutants and exit")
	only := flag.String("only", "", "run only mutants whose name contains this")
	flag.Parse()
	if *list {
		for _, m := range mutants {
			fmt.Printf("%-24s %s\n%-24s caught by %s -run '%s'\n", m.name, m.what, "", m.pkg, m.tests)
		}
		return
	}
	if err := run(*only); err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(1)
	}
}

func run(only string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "lockbank-mutants-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := copyTracked(root, scratch); err != nil {
		return err
	}
	start := time.Now()
	var survived, broken []string
	ran := 0
	for _, m := range mutants {
		if !strings.Contains(m.name, only) {
			continue
		}
		ran++
		t0 := time.Now()
		verdict, detail := try(scratch, m)
		fmt.Printf("%-9s %-24s %-48s %s -run '%s' (%s)\n", verdict, m.name, m.what, m.pkg, m.tests, time.Since(t0).Round(time.Second))
		if detail != "" {
			fmt.Println(indent(detail))
		}
		switch verdict {
		case "SURVIVED":
			survived = append(survived, m.name)
		case "BROKEN":
			broken = append(broken, m.name)
		}
	}
	fmt.Printf("\n%d mutants, %d caught, %d survived, %d could not be applied or built, in %s\n",
		ran, ran-len(survived)-len(broken), len(survived), len(broken), time.Since(start).Round(time.Second))
	if ran == 0 {
		return fmt.Errorf("no mutant matches %q", only)
	}
	if len(survived)+len(broken) > 0 {
		return fmt.Errorf("survived: %v; broken: %v", survived, broken)
	}
	return nil
}

// try applies m in dir, runs its tests, and puts the files back.
func try(dir string, m mutant) (verdict, detail string) {
	originals := map[string][]byte{}
	defer func() {
		for file, b := range originals {
			_ = os.WriteFile(filepath.Join(dir, file), b, 0o644)
		}
	}()
	for _, e := range m.edits {
		path := filepath.Join(dir, e.file)
		b, err := os.ReadFile(path)
		if err != nil {
			return "BROKEN", err.Error()
		}
		if _, seen := originals[e.file]; !seen {
			originals[e.file] = b
		}
		if n := bytes.Count(b, []byte(e.from)); n != 1 {
			return "BROKEN", fmt.Sprintf("%s: the text to replace occurs %d times, want once: %q", e.file, n, e.from)
		}
		if err := os.WriteFile(path, bytes.Replace(b, []byte(e.from), []byte(e.to), 1), 0o644); err != nil {
			return "BROKEN", err.Error()
		}
	}
	// The tests' temporary files, their private PostgreSQL's included, go to
	// a directory of this mutant's, so that a server left behind by a test
	// binary the mutant crashed (a panic skips pgtest's cleanup) is stopped.
	tmp, err := os.MkdirTemp("", "lockbank-mutant-")
	if err != nil {
		return "BROKEN", err.Error()
	}
	defer stopLeftovers(tmp)
	// PostgreSQL runs as the postgres user when we are root: it must reach
	// its data directory below tmp.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "BROKEN", err.Error()
	}
	cmd := exec.Command("go", "test", "-count=1", "-vet=off", "-timeout=5m", "-run", m.tests, "./"+m.pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "SURVIVED", ""
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
		return "BROKEN", string(out)
	case errors.As(err, &exit):
		return "caught", failures(out)
	}
	return "BROKEN", err.Error()
}

// stopLeftovers stops every PostgreSQL whose data directory is below tmp —
// their postmaster.pid names the process — and removes tmp.
func stopLeftovers(tmp string) {
	pids, _ := filepath.Glob(filepath.Join(tmp, "*", "*", "postmaster.pid"))
	for _, pidFile := range pids {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Signal(syscall.SIGQUIT) // immediate shutdown
			}
		}
	}
	if len(pids) > 0 {
		time.Sleep(time.Second) // let the servers exit before their files go
	}
	_ = os.RemoveAll(tmp)
}

// failures picks the names of the failed tests out of go test's output.
func failures(out []byte) string {
	var names []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "--- FAIL: ") {
			names = append(names, strings.Fields(s)[2])
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "failed: " + strings.Join(names, ", ")
}

func indent(s string) string {
	return "          " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n          ")
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run inside the lockbank module")
	}
	return filepath.Dir(mod), nil
}

// copyTracked copies the files git tracks (and those not yet committed but
// not ignored) from root to dst: the module as it stands, without build
// output or data directories.
func copyTracked(root, dst string) error {
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for name := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		if err := copyFile(filepath.Join(root, name), filepath.Join(dst, name)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted in the work tree
			}
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
