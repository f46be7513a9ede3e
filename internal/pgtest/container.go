package pgtest

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
)

func init() {
	// These machines run inside a container: testcontainers sees /.dockerenv and
	// would dial the default gateway instead of the mapped port on loopback.
	setDefaultEnv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	// Ryuk, the reaper, is an image that cannot be pulled without a registry;
	// Main terminates the container itself.
	setDefaultEnv("TESTCONTAINERS_RYUK_DISABLED", "true")
}

func setDefaultEnv(key, value string) {
	if _, ok := os.LookupEnv(key); !ok {
		os.Setenv(key, value)
	}
}

// dockerImage reports whether a Docker daemon answers within a few seconds,
// and whether it holds image.
func dockerImage(ctx context.Context, image string) (daemon, present bool) {
	defer func() {
		if recover() != nil { // testcontainers panics on some broken setups
			daemon, present = false, false
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false, false
	}
	defer provider.Close()
	images, err := provider.ListImages(ctx)
	if err != nil {
		return false, false
	}
	for _, img := range images {
		if img.Name == image || img.Name == "docker.io/library/"+image {
			return true, true
		}
	}
	return true, false
}

func pgImage() string {
	if img := os.Getenv("PGTEST_IMAGE"); img != "" {
		return img
	}
	return DefaultImage
}

func startContainer(ctx context.Context) error {
	image := pgImage()
	started := time.Now()
	c, err := postgres.Run(ctx, image,
		postgres.WithDatabase("postgres"),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
		// fsync=off is the module's default command; durability is not under test.
		testcontainers.WithCmdArgs("-c", "max_connections=300"),
	)
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return fmt.Errorf("start %s: %w", image, err)
	}
	url, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = c.Terminate(context.Background())
		return err
	}
	fmt.Fprintf(os.Stderr, "pgtest: started container %.12s from %s in %s\n", c.GetContainerID(), image, time.Since(started).Round(time.Millisecond))
	adminURL = url
	stop = func() {
		if err := c.Terminate(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: terminate container: %v\n", err)
		}
	}
	return nil
}
