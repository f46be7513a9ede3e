package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Bankd finds a bankd binary: next to the running executable, then on PATH,
// then built into dir from the source checkout around the working
// directory (so that `go run ./cmd/bankctl` works).
func Bankd(ctx context.Context, dir string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "bankd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("bankd"); err == nil {
		return p, nil
	}
	p, err := Build(ctx, dir)
	if err != nil {
		return "", errors.New("no bankd next to bankctl or on PATH, and none could be built: " + err.Error())
	}
	return p, nil
}

// Build builds bankd from the lockbank source checkout around the working
// directory into dir, and returns its path: for tests, which must run the
// code under test, never an older bankd found elsewhere.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "bankd")
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/bankd")
	build.Dir = root
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build bankd: %v\n%s", err, msg)
	}
	return out, nil
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// BuildOnce is Build into a temporary directory, once per process: for
// tests, which start many nodes of the code under test.
func BuildOnce(ctx context.Context) (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bankd-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		built, buildErr = Build(ctx, dir)
	})
	return built, buildErr
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
			return "", errors.New("not in a lockbank source checkout: no go.mod of github.com/lockbank/lockbank above the working directory")
		}
		dir = parent
	}
}
