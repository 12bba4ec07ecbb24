package mesh_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestPackageDocOpensOnTheWayIn: `go doc github.com/weftmesh/weft/mesh`
// is where a newcomer starts, and go doc prints no examples and lists
// names alphabetically. So the package comment itself must name the four
// methods a service calls, in its first paragraph, and carry the example
// service, clients and servers of both protocols.
func TestPackageDocOpensOnTheWayIn(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	p, err := doc.NewFromFiles(fset, []*ast.File{f}, "github.com/weftmesh/weft/mesh")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(p.Doc, "\n\n")
	for _, name := range []string{"Mesh.HTTPClient", "Mesh.Handler", "Mesh.DialGRPC", "Mesh.NewGRPCServer"} {
		if !strings.Contains(first, "["+name+"]") {
			t.Errorf("the package comment's first paragraph does not name [%s]:\n%s", name, first)
		}
	}
	_, example, ok := strings.Cut(p.Doc, "# Example\n")
	if !ok {
		t.Fatal("the package comment has no # Example section")
	}
	for _, code := range []string{"mesh.New(", "m.HTTPClient().Get(", "m.DialGRPC(", "m.NewGRPCServer()", "m.ListenAndServe("} {
		if !strings.Contains(example, code) {
			t.Errorf("the package comment's example lacks %s", code)
		}
	}
}
