package devplane

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/weftmesh/weft/internal/suggest"
)

// decoder walks yaml.Node trees by hand rather than unmarshalling into
// structs, so that every error can name the line and path of the value at
// fault and every unknown key is refused.
type decoder struct{ file string }

type fieldFunc func(key, val *yaml.Node, path string) error

func resolve(n *yaml.Node) *yaml.Node {
	for range 16 { // bounded: alias chains are short, and cycles are refused by yaml
		if n == nil || n.Kind != yaml.AliasNode {
			break
		}
		n = n.Alias
	}
	return n
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) error {
	return d.errLine(n.Line, path, format, args...)
}

func (d *decoder) errLine(line int, path, format string, args ...any) error {
	return &ParseError{File: d.file, Line: line, Path: path, Err: fmt.Errorf(format, args...)}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected node"
}

// fields decodes a mapping: each key must be one of fs, and appear once.
func (d *decoder) fields(n *yaml.Node, path string, fs map[string]fieldFunc) error {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return d.errf(n, path, "want a mapping, got %s", kindName(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		p := join(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			return d.errf(k, p, "duplicate key (first at line %d)", line)
		}
		seen[k.Value] = k.Line
		f, ok := fs[k.Value]
		if !ok {
			known := make([]string, 0, len(fs))
			for name := range fs {
				known = append(known, name)
			}
			return d.errf(k, path, "%s", suggest.Unknown("key", k.Value, known, true))
		}
		if err := f(k, v, p); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) seq(n *yaml.Node, path string, f func(i int, n *yaml.Node, path string) error) error {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return d.errf(n, path, "want a list, got %s", kindName(n))
	}
	for i, el := range n.Content {
		if err := f(i, resolve(el), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) str(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", d.errf(n, path, "want a string, got %s", kindName(n))
	}
	return n.Value, nil
}

// nameRE is what service and version names may be: they become parts of
// resource names and hosts, so no ':' or '/'.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

func (d *decoder) name(n *yaml.Node, path string) (string, error) {
	s, err := d.str(n, path)
	if err != nil {
		return "", err
	}
	if !nameRE.MatchString(s) {
		return "", d.errf(n, path, "%q is not a valid name (letters, digits, '.', '_', '-')", s)
	}
	return s, nil
}

func (d *decoder) uint32(n *yaml.Node, path string, lo, hi uint64) (uint32, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, d.errf(n, path, "want a number, got %s", kindName(n))
	}
	v, err := strconv.ParseUint(n.Value, 10, 32)
	if err != nil || v < lo || v > hi {
		return 0, d.errf(n, path, "want a whole number from %d to %d, got %q", lo, hi, n.Value)
	}
	return uint32(v), nil
}

func (d *decoder) uint32p(dst **uint32, n *yaml.Node, path string, lo, hi uint64) error {
	v, err := d.uint32(n, path, lo, hi)
	if err != nil {
		return err
	}
	*dst = &v
	return nil
}

func (d *decoder) bool(n *yaml.Node, path string) (bool, error) {
	if n.Kind == yaml.ScalarNode {
		if b, err := strconv.ParseBool(n.Value); err == nil {
			return b, nil
		}
	}
	return false, d.errf(n, path, "want true or false, got %s", kindName(n))
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, error) {
	s, err := d.str(n, path)
	if err != nil {
		return 0, err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, d.errf(n, path, "bad duration %q: want a number with a unit, such as 250ms or 2s", s)
	}
	if v <= 0 {
		return 0, d.errf(n, path, "duration %q must be positive", s)
	}
	return v, nil
}
