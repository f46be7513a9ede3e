// Package text decides whether a string a client sent is text: something a
// person, a log line, a terminal or a page shows as what it is. Names that
// lockbank stores and shows back (an account's owner, a lease's holder) must
// be; bytes that render as nothing, reorder what follows, end a log line or
// are refused by PostgreSQL (NUL) are not names.
package text

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Check returns nil when s is valid UTF-8 with no control characters (C0,
// DEL, C1: category Cc), no format characters (Cf: zero-width spaces and
// joiners, bidirectional overrides, the BOM) and no line or paragraph
// separators (Zl, Zp). Otherwise its error names the first offending
// character and its position, counted in characters from 1. Spaces, letters
// of every script, marks, digits, punctuation and symbols are all text; s is
// judged as it is, never trimmed or normalised.
func Check(s string) error {
	n := 0
	for i, r := range s {
		n++
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("is not valid UTF-8 at character %d", n)
			}
		}
		if kind := forbidden(r); kind != "" {
			return fmt.Errorf("contains %U (%s) at character %d", r, kind, n)
		}
	}
	return nil
}

func forbidden(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return "a control character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character"
	case unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
		return "a line separator"
	}
	return ""
}
