package live_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/lockbank/lockbank/web/live"
)

// chromium finds a Chromium to drive, or skips: Debian's package is
// chromium (.ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium binary on PATH (apt-get install chromium): the live page's browser test cannot run")
	return ""
}

// artifacts is where screenshots go: $LOCKBANK_ARTIFACTS, else a
// directory of the test's own.
func artifacts(t *testing.T) string {
	dir := os.Getenv("LOCKBANK_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browserLog collects what must not happen on the page: console errors,
// uncaught exceptions, requests that failed, and answers that are neither
// success nor one of the refusals the stories provoke on purpose.
type browserLog struct {
	mu       sync.Mutex
	problems []string
	refusals int // 409s on withdrawals: the stories' refused writes
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value))
			}
			b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "uncaught: "+ev.ExceptionDetails.Text+" "+describe(ev.ExceptionDetails.Exception))
	case *network.EventLoadingFailed:
		// The event stream is cancelled when the page goes; nothing else may fail.
		if !ev.Canceled {
			b.problems = append(b.problems, fmt.Sprintf("request failed: %s (%s)", ev.ErrorText, ev.Type))
		}
	case *network.EventResponseReceived:
		r := ev.Response
		switch {
		case r.Status < 400:
		case r.Status == http.StatusConflict && strings.HasSuffix(r.URL, "/withdrawals"):
			b.refusals++
		default:
			b.problems = append(b.problems, fmt.Sprintf("%d from %s", r.Status, r.URL))
		}
	case *cdplog.EventEntryAdded:
		// Chromium logs every 4xx as "Failed to load resource": those are
		// the responses judged above.
		if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
			b.problems = append(b.problems, "browser log: "+ev.Entry.Text)
		}
	}
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}

func (b *browserLog) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Error(p)
	}
}

// TestPageInBrowser drives the live page in a real, headless Chromium
// against two bankd nodes on one real database: it plays the race and
// checks each strategy's verdict, plays the crashed holder (by keyboard)
// and both paused holders, finds the fence's refusal with its token in the
// timeline, sees an account opened through the other node (its owner shown
// as text, not markup), and saves screenshots at desktop and phone width.
func TestPageInBrowser(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	nodes := startNodes(t, live.Options{Poll: 100 * time.Millisecond}, "node-a", "node-b")
	a, b := nodes[0], nodes[1]

	var blog browserLog
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx, chromedp.WithListener(blog.listen))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	page := a.URL + "/?nodes=" + a.URL + "," + b.URL
	must(t, chromedp.Do(ctx, chromedp.Navigate(page)))
	waitJS(ctx, t, `document.body.dataset.ready === "true"`, "the page to be ready")

	t.Run("Race", func(t *testing.T) {
		// Each play prepends its own race; the newest is the first .race.
		var verdicts map[string]string
		for play := 1; ; play++ {
			before := evalJS[int](ctx, t, `document.querySelectorAll(".race").length`)
			must(t, chromedp.Do(ctx, chromedp.Click("#btn-race")))
			waitJS(ctx, t, fmt.Sprintf(`document.querySelectorAll(".race").length === %d &&
				document.querySelector(".race").querySelectorAll("[data-verdict]").length === 4`, before+1), "four race verdicts")
			verdicts = evalJS[map[string]string](ctx, t, `Object.fromEntries([...document.querySelector(".race").querySelectorAll("[data-strategy]")]
				.map((c) => [c.dataset.strategy, c.querySelector("[data-verdict]").dataset.verdict]))`)
			// On a loaded machine one unsafe request can be held up past the
			// other's 500 ms hold; the page then says they did not overlap
			// and to play again, which is what a user would do.
			arith := evalJS[string](ctx, t, `document.querySelector('.race [data-strategy="unsafe"] .arith').textContent`)
			if play < 3 && verdicts["unsafe"] == "SAFE" && strings.Contains(arith, "did not overlap") {
				t.Logf("play %d: the unsafe requests did not overlap; playing again", play)
				continue
			}
			break
		}
		want := map[string]string{"unsafe": "DOUBLE SPEND", "row": "SAFE", "lease": "SAFE", "lease-nofence": "SAFE"}
		for s, v := range want {
			if verdicts[s] != v {
				t.Errorf("race, %s: verdict %q, want %q (all: %v)", s, verdicts[s], v, verdicts)
			}
		}
		arith := evalJS[string](ctx, t, `document.querySelector('.race [data-strategy="unsafe"] .arith').textContent`)
		if !strings.Contains(arith, "withdrawals 10,000 (2 in the ledger)") {
			t.Errorf("unsafe's arithmetic %q does not show both withdrawals of 5000 in the ledger", arith)
		}
	})

	t.Run("CrashedHolderByKeyboard", func(t *testing.T) {
		must(t, chromedp.Do(ctx, chromedp.Focus("#btn-crash"), chromedp.KeyEvent("\r")))
		v := storyVerdict(ctx, t, "crashed holder")
		if v != "FREED AFTER TTL" {
			t.Errorf("crashed holder: verdict %q, want FREED AFTER TTL", v)
		}
	})

	t.Run("PausedHolderFenced", func(t *testing.T) {
		must(t, chromedp.Do(ctx, chromedp.Click("#btn-pause-fenced")))
		if v := storyVerdict(ctx, t, "with the fence"); v != "FENCED" {
			t.Errorf("paused holder with the fence: verdict %q, want FENCED", v)
		}
		// node-a's token, as the story drew its lease.
		token := evalJS[string](ctx, t, `[...document.querySelectorAll(".story")].find((s) => s.querySelector("h3").textContent.includes("with the fence"))
			.querySelector(".leasebar").title.replace("lease, token ", "")`)
		sel := fmt.Sprintf(`[...document.querySelectorAll('#timeline li[data-kind="refused"][data-token="%s"]')].some((li) => li.textContent.includes("stale_fencing_token") && li.textContent.includes("token %s"))`, token, token)
		waitJS(ctx, t, sel, "the refused stale write with token "+token+" in the timeline")
	})

	t.Run("PausedHolderWithoutFence", func(t *testing.T) {
		must(t, chromedp.Do(ctx, chromedp.Click("#btn-pause-nofence")))
		if v := storyVerdict(ctx, t, "without the fence"); v != "STALE OVERWRITE" {
			t.Errorf("paused holder without the fence: verdict %q, want STALE OVERWRITE", v)
		}
	})

	t.Run("EventFromTheOtherNode", func(t *testing.T) {
		owner := `<img src=x onerror="console.error('owner ran as HTML')">bob`
		body := fmt.Sprintf(`{"owner":%q,"balance":700}`, owner)
		resp, err := http.Post(b.URL+"/v1/accounts", "application/json", strings.NewReader(body))
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("opening an account on node-b: %s", resp.Status)
		}
		waitJS(ctx, t, `[...document.querySelectorAll('#timeline li[data-kind="open"]')].some((li) =>
			li.querySelector(".node").textContent === "node-b" && li.textContent.includes("<img src=x") && li.textContent.includes("with 700"))`,
			"node-b's account in node-a's timeline")
		if n := evalJS[int](ctx, t, `document.querySelectorAll("img").length`); n != 0 {
			t.Errorf("%d img elements on the page: an owner was shown as markup", n)
		}
	})

	dir := artifacts(t)
	// The whole page, and what a visitor sees first (the README's pictures).
	shot := func(name string, a chromedp.Action[[]byte]) {
		png, err := chromedp.Run(ctx, a)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
	}
	shot("live-desktop-full.png", chromedp.FullScreenshot(100))
	must(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)))
	shot("live-desktop.png", chromedp.CaptureScreenshot())
	// A phone, with reduced motion asked for.
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-reduced-motion", Value: "reduce"}}})
			return err
		})))
	must(t, chromedp.Do(ctx, chromedp.Navigate(page)))
	waitJS(ctx, t, `document.body.dataset.ready === "true" && document.querySelectorAll("#timeline li").length > 5`, "the page at phone width")
	if w := evalJS[int](ctx, t, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at phone width the page is %d px wide: it scrolls sideways", w)
	}
	shot("live-phone-full.png", chromedp.FullScreenshot(100))
	must(t, chromedp.Do(ctx, chromedp.Click("#btn-pause-fenced")))
	if v := storyVerdict(ctx, t, "with the fence"); v != "FENCED" {
		t.Errorf("at phone width, paused holder with the fence: verdict %q, want FENCED", v)
	}
	must(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector("#stories").scrollIntoView()`)))
	shot("live-phone.png", chromedp.CaptureScreenshot())
	t.Logf("screenshots in %s", dir)

	blog.check(t)
	if blog.refusals == 0 {
		t.Error("no withdrawal was refused: the stories' refusals never reached the browser")
	}
}

// storyVerdict waits for the verdict of the newest story whose title
// contains title.
func storyVerdict(ctx context.Context, t *testing.T, title string) string {
	t.Helper()
	find := fmt.Sprintf(`(() => { const s = [...document.querySelectorAll("#stories > .story")].find((s) => s.querySelector("h3") && s.querySelector("h3").textContent.includes(%q));
		const v = s && s.querySelector("[data-verdict]"); return v ? v.dataset.verdict : ""; })()`, title)
	waitJS(ctx, t, find+` !== ""`, "the verdict of "+title)
	return evalJS[string](ctx, t, find)
}

func waitJS(ctx context.Context, t *testing.T, expr, what string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 3000)`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, text)
	}
}

func evalJS[T any](ctx context.Context, t *testing.T, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
