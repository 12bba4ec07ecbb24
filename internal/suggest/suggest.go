// Package suggest finds the known name closest to a misspelt one, so that
// errors about an unknown key, field or variable can say what was meant:
// the dev control plane's config keys, the authorization policy file's
// fields and the WEFT_* environment variables share it.
package suggest

import (
	"slices"
	"strings"
)

// Closest returns the name in known nearest to word by edit distance
// (case-insensitive; insertions, deletions, substitutions and swaps of
// adjacent letters), when it is near enough to be a likely typo: at most
// a third of the longer name's length, and at least one edit allowed.
// Ties go to the name first in sorted order. ok is false when nothing is
// near enough.
func Closest(word string, known []string) (best string, ok bool) {
	w := strings.ToLower(word)
	bestD := -1
	sorted := slices.Clone(known)
	slices.Sort(sorted)
	for _, k := range sorted {
		d := distance(w, strings.ToLower(k))
		limit := max(max(len(w), len(k))/3, 1)
		if d > limit || d == 0 && k == word {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	return best, bestD >= 0
}

// Unknown describes an unknown name of a kind ("key", "field",
// "variable") for an error: `unknown key "timout" (did you mean
// "timeout"? known: a, b, c)`. With listKnown false the list of known
// names is left out, for long lists.
func Unknown(kind, word string, known []string, listKnown bool) string {
	var b strings.Builder
	b.WriteString("unknown " + kind + " " + quote(word))
	best, ok := Closest(word, known)
	if !ok && !listKnown {
		return b.String()
	}
	b.WriteString(" (")
	if ok {
		b.WriteString("did you mean " + quote(best) + "?")
	}
	if listKnown {
		if ok {
			b.WriteString(" ")
		}
		sorted := slices.Clone(known)
		slices.Sort(sorted)
		b.WriteString("known: " + strings.Join(sorted, ", "))
	}
	b.WriteString(")")
	return b.String()
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// distance is the optimal string alignment distance between a and b
// (Levenshtein with adjacent transpositions), over bytes: names here are
// ASCII.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		// Names are short; bound the work for hostile input.
		if a == b {
			return 0
		}
		return max(len(a), len(b))
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
