package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// tone colours a result on a terminal.
type tone int

const (
	plain tone = iota
	good
	bad
)

// timeline prints what happens as it happens: relative time, node, action,
// token, result. Text with colour on a terminal, plain text in a pipe, or
// JSON Lines with --json.
type timeline struct {
	mu       sync.Mutex
	start    time.Time
	w        io.Writer
	json     bool
	terminal bool
	progress bool // a progress line is on screen and must be cleared first
}

type event struct {
	T      float64 `json:"t"`
	Node   string  `json:"node,omitempty"`
	Action string  `json:"action"`
	Token  int64   `json:"token,omitempty"`
	Result string  `json:"result,omitempty"`
}

func newTimeline(w io.Writer, jsonOut bool) *timeline {
	tl := &timeline{start: time.Now(), w: w, json: jsonOut}
	if f, ok := w.(*os.File); ok && !jsonOut {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tl.terminal = true
		}
	}
	return tl
}

func (tl *timeline) event(node, action string, token int64, result string, t tone) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	e := event{T: time.Since(tl.start).Seconds(), Node: node, Action: action, Token: token, Result: result}
	if tl.json {
		tl.writeJSON(map[string]any{"event": e})
		return
	}
	tl.clearProgress()
	tok := ""
	if token != 0 {
		tok = fmt.Sprintf("token %d", token)
	}
	fmt.Fprintf(tl.w, "%+8.3fs  %-7s %-44s %-10s %s\n", e.T, node, action, tok, tl.paint(result, t))
}

// restart sets the timeline's zero to now.
func (tl *timeline) restart() {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.start = time.Now()
}

// note is a line of commentary.
func (tl *timeline) note(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if tl.json {
		tl.writeJSON(map[string]any{"note": msg})
		return
	}
	tl.clearProgress()
	fmt.Fprintf(tl.w, "%+8.3fs  %s\n", time.Since(tl.start).Seconds(), msg)
}

// showProgress draws a live "done/total" line (just "done" when total is
// unknown), on a terminal only.
func (tl *timeline) showProgress(label string, done, total int) {
	if !tl.terminal {
		return
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if total > 0 {
		fmt.Fprintf(tl.w, "\r  %s %d/%d\033[K", label, done, total)
	} else {
		fmt.Fprintf(tl.w, "\r  %s %d\033[K", label, done)
	}
	tl.progress = true
}

func (tl *timeline) clearProgress() {
	if tl.progress {
		fmt.Fprint(tl.w, "\r\033[K")
		tl.progress = false
	}
}

// result ends a run: in JSON the result object, in text nothing (the
// scenario prints its own summary with printf).
func (tl *timeline) result(v any) {
	if tl.json {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		tl.writeJSON(map[string]any{"result": v})
	}
}

// printf writes text output (skipped with --json).
func (tl *timeline) printf(format string, args ...any) {
	if tl.json {
		return
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.clearProgress()
	fmt.Fprintf(tl.w, format, args...)
}

func (tl *timeline) paint(s string, t tone) string {
	if !tl.terminal || s == "" {
		return s
	}
	switch t {
	case good:
		return "\033[32m" + s + "\033[0m"
	case bad:
		return "\033[31m" + s + "\033[0m"
	}
	return s
}

func (tl *timeline) writeJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(tl.w, "%s\n", b)
}
