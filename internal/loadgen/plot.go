package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// WritePlot draws one scenario's runs as an SVG of two panels against
// concurrency: throughput, and p99 latency (log scale), one line per target.
func WritePlot(w io.Writer, scenario string, runs []Run) {
	const (
		panelW, panelH = 420.0, 300.0
		left, top      = 60.0, 40.0
		gap            = 90.0
	)
	var levels []int
	var targets []string
	for _, r := range runs {
		if r.Scenario != scenario {
			continue
		}
		if !slices.Contains(levels, r.Clients) {
			levels = append(levels, r.Clients)
		}
		if !slices.Contains(targets, r.Target) {
			targets = append(targets, r.Target)
		}
	}
	slices.Sort(levels)
	colors := map[string]string{TargetRawSQL: "#555555", "row": "#1f77b4", "lease": "#ff7f0e"}
	x := func(panel, i int) float64 {
		step := panelW / float64(max(len(levels)-1, 1))
		return left + float64(panel)*(panelW+gap) + float64(i)*step
	}
	var maxTput, maxP99, minP99 float64 = 1, 1, math.Inf(1)
	for _, r := range runs {
		if r.Scenario == scenario {
			maxTput = math.Max(maxTput, r.Throughput)
			maxP99 = math.Max(maxP99, r.P99Ms)
			if r.P99Ms > 0 {
				minP99 = math.Min(minP99, r.P99Ms)
			}
		}
	}
	lo, hi := math.Floor(math.Log10(math.Min(minP99, maxP99))), math.Ceil(math.Log10(maxP99))
	if hi <= lo {
		hi = lo + 1
	}
	yTput := func(v float64) float64 { return top + panelH - v/(maxTput*1.1)*panelH }
	yP99 := func(v float64) float64 {
		return top + panelH - (math.Log10(math.Max(v, math.Pow(10, lo)))-lo)/(hi-lo)*panelH
	}

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n",
		2*panelW+gap+left+140, top+panelH+60)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	titles := []string{"throughput (ok withdrawals/s)", "p99 latency (ms, log scale)"}
	for panel := range 2 {
		x0 := x(panel, 0)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" font-weight="bold">%s: %s</text>`+"\n", x0, top-15, scenario, titles[panel])
		fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", x0, top, panelW, panelH)
		for i, c := range levels {
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(panel, i), top+panelH+16, c)
		}
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">clients</text>`+"\n", x0+panelW/2, top+panelH+34)
	}
	for i := 0; i <= 4; i++ {
		v := maxTput * 1.1 * float64(i) / 4
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, yTput(v)+4, v)
	}
	for e := lo; e <= hi; e++ {
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n", x(1, 0)-6, yP99(math.Pow(10, e))+4, math.Pow(10, e))
	}
	for ti, target := range targets {
		color := colors[target]
		if color == "" {
			color = "#2ca02c"
		}
		var tput, p99 []string
		for _, r := range runs {
			if r.Scenario != scenario || r.Target != target {
				continue
			}
			i := slices.Index(levels, r.Clients)
			tput = append(tput, fmt.Sprintf("%.1f,%.1f", x(0, i), yTput(r.Throughput)))
			p99 = append(p99, fmt.Sprintf("%.1f,%.1f", x(1, i), yP99(r.P99Ms)))
		}
		for _, pts := range [][]string{tput, p99} {
			fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(w, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], color)
			}
		}
		ly := top + 20 + float64(ti)*18
		lx := x(1, 0) + panelW + 15
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", lx, ly-4, lx+20, ly-4, color)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+26, ly, target)
	}
	fmt.Fprintln(w, `</svg>`)
}
