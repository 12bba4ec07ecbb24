package mesh

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every WEFT_* variable of the README's environment table is one New
// reads, so none of them is warned about as unknown.
func TestKnownEnvCoversTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("`(WEFT_[A-Z_]*[A-Z])`")
	var environ []string
	for line := range strings.Lines(string(readme)) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range re.FindAllStringSubmatch(cell, -1) {
			environ = append(environ, m[1]+"=x")
		}
	}
	if len(environ) < 20 {
		t.Fatalf("found %d variables in the README's table, want the whole table", len(environ))
	}
	if w := unknownEnv(environ); len(w) != 0 {
		t.Errorf("variables of the README warned about as unknown: %q", w)
	}
}
