package history

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestPlotIsSVGWithFaultWindows(t *testing.T) {
	ops, _ := validHistory()
	faults := []Fault{{Kind: "pause", Node: "node-a", Start: 1, End: 3}, {Kind: "kill", Node: "node-b", Start: 5, End: 6}}
	var b strings.Builder
	if err := WritePlot(&b, ops, faults, 10); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		Rects   []struct {
			Title string `xml:"title"`
		} `xml:"rect"`
		Polylines []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not well-formed SVG: %v\n%s", err, b.String())
	}
	var shaded []string
	for _, r := range doc.Rects {
		if r.Title != "" {
			shaded = append(shaded, r.Title)
		}
	}
	if strings.Join(shaded, ",") != "pause node-a,kill node-b" || len(doc.Polylines) != 2 || strings.Count(doc.Polylines[0].Points, ",") != 10 {
		t.Fatalf("shaded %v, %d polylines (%v)", shaded, len(doc.Polylines), doc.Polylines)
	}
}
