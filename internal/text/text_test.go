package text

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  string // a substring of the error; "" when s is text
	}{
		{"Plain", "alice", ""},
		{"SpacesKept", "  bob  ", ""},
		{"Scripts", "Zoë Łukasz 日本 ☃ ©", ""},
		{"CombiningMark", "e\u0301", ""},
		{"Empty", "", ""},
		{"NUL", "a\x00b", "U+0000 (a control character) at character 2"},
		{"Tab", "a\tb", "U+0009"},
		{"Newline", "a\n", "U+000A"},
		{"Escape", "\x1b[31mred", "U+001B"},
		{"DEL", "a\x7f", "U+007F"},
		{"C1", "a\u0085", "U+0085 (a control character)"},
		{"BidiOverride", "evil\u202egnp.exe", "U+202E (an invisible format character) at character 5"},
		{"ZeroWidthSpace", "ali\u200bce", "U+200B"},
		{"BOM", "\ufeffalice", "U+FEFF"},
		{"LineSeparator", "a\u2028b", "U+2028 (a line separator)"},
		{"ParagraphSeparator", "a\u2029b", "U+2029"},
		{"InvalidUTF8", "a\xffb", "not valid UTF-8 at character 2"},
		{"TruncatedUTF8", "é"[:1], "not valid UTF-8 at character 1"},
		{"ReplacementCharacterIsText", "a\ufffdb", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Check(%q) = %v, want text", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Check(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}
