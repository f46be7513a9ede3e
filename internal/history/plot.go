package history

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// WritePlot draws throughput (ok operations per second) and p99 latency
// over time as an SVG, with the fault windows shaded: the picture of a check.
func WritePlot(w io.Writer, ops []Op, faults []Fault, duration float64) error {
	const (
		width, height = 900.0, 420.0
		left, right   = 60.0, 60.0
		top, bottom   = 30.0, 40.0
	)
	seconds := int(math.Ceil(duration))
	if seconds < 1 {
		seconds = 1
	}
	okPerSec := make([]float64, seconds)
	lat := make([][]float64, seconds)
	for _, o := range ops {
		s := int(o.Complete)
		if s < 0 || s >= seconds {
			continue
		}
		if o.Outcome == OutcomeOK {
			okPerSec[s]++
		}
		lat[s] = append(lat[s], (o.Complete-o.Invoke)*1000)
	}
	p99 := make([]float64, seconds)
	for s, l := range lat {
		if len(l) > 0 {
			sort.Float64s(l)
			p99[s] = l[int(math.Ceil(0.99*float64(len(l))))-1]
		}
	}
	maxOf := func(v []float64) float64 {
		m := 1.0
		for _, x := range v {
			m = math.Max(m, x)
		}
		return m
	}
	maxT, maxL := maxOf(okPerSec), maxOf(p99)
	plotW, plotH := width-left-right, height-top-bottom
	x := func(sec float64) float64 { return left + sec/float64(seconds)*plotW }
	y := func(v, max float64) float64 { return top + plotH - v/max*plotH }
	line := func(v []float64, max float64) string {
		var pts []string
		for s, val := range v {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(s)+0.5), y(val, max)))
		}
		return strings.Join(pts, " ")
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	colors := map[string]string{"pause": "#f4c430", "kill": "#e06666", "terminate": "#6fa8dc", "db-restart": "#8e7cc3"}
	for _, f := range faults {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.35"><title>%s %s</title></rect>`+"\n",
			x(f.Start), top, math.Max(x(f.End)-x(f.Start), 2), plotH, colors[f.Kind], f.Kind, f.Node)
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#2a7" stroke-width="2" points="%s"/>`+"\n", line(okPerSec, maxT))
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#a2a" stroke-width="1.5" points="%s"/>`+"\n", line(p99, maxL))
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#2a7">ok ops/s (max %.0f)</text>`+"\n", left, top-10, maxT)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#a2a" text-anchor="end">p99 latency ms (max %.0f)</text>`+"\n", width-right, top-10, maxL)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">seconds (shaded: pause yellow, kill red, terminate blue, db-restart purple)</text>`+"\n", left+plotW/2, height-10)
	for s := 0; s <= seconds; s += max(1, seconds/10) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(float64(s)), top+plotH+15, s)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
