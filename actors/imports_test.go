// The actors are deterministic state machines: they must not reach the
// operating system, the network, real time, randomness or concurrency. This
// test enforces that on every package under actors/ by parsing its source.
package actors_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// forbiddenImports are packages (and, with a trailing "/", package trees) no
// actor file may import.
var forbiddenImports = []string{
	"os", "os/exec", "net", "net/", "math/rand", "math/rand/v2", "crypto/rand",
	"sync", "sync/atomic", "runtime", "syscall", "github.com/asynkron/protoactor-go",
	"github.com/asynkron/protoactor-go/",
}

// forbiddenTimeCalls read or wait on the real clock; time.Duration and
// arithmetic on Env.Now are fine.
var forbiddenTimeCalls = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "Tick": true, "NewTimer": true, "NewTicker": true,
}

// forbiddenDeps must not appear among the transitive dependencies of the
// actor packages (the harness actortest is test-only and may use os).
var forbiddenDeps = []string{"os/exec", "net", "net/", "github.com/asynkron/protoactor-go", "github.com/asynkron/protoactor-go/"}

func importForbidden(path string, list []string) bool {
	for _, f := range list {
		if path == f || strings.HasSuffix(f, "/") && strings.HasPrefix(path, f) {
			return true
		}
	}
	return false
}

// check returns one line per violation in one parsed file.
func check(fset *token.FileSet, f *ast.File) []string {
	var bad []string
	timeName := "" // the local name of package time, if imported
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if importForbidden(p, forbiddenImports) {
			bad = append(bad, fset.Position(imp.Pos()).String()+": imports "+p)
		}
		if p == "time" {
			timeName = "time"
			if imp.Name != nil {
				timeName = imp.Name.Name
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			bad = append(bad, fset.Position(n.Pos()).String()+": go statement")
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && timeName != "" && id.Name == timeName && forbiddenTimeCalls[n.Sel.Name] {
				bad = append(bad, fset.Position(n.Pos()).String()+": uses time."+n.Sel.Name)
			}
		}
		return true
	})
	return bad
}

type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Deps       []string
}

func goList(t *testing.T, pattern string, deps bool) []listedPackage {
	t.Helper()
	args := []string{"list", "-json"}
	if deps {
		args = append(args, "-deps")
	}
	out, err := exec.Command("go", append(args, pattern)...).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestActorsAreDeterministic(t *testing.T) {
	pkgs := goList(t, "./...", false)
	files := 0
	for _, p := range pkgs {
		for _, name := range p.GoFiles { // non-test files only
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for _, b := range check(fset, f) {
				t.Errorf("%s: %s", p.ImportPath, b)
			}
		}
	}
	// The state machines themselves must have been checked.
	if files < 6 {
		t.Fatalf("checked only %d files: the package list is wrong", files)
	}
}

func TestActorDependencies(t *testing.T) {
	checked := 0
	for _, p := range goList(t, "./...", false) {
		if strings.HasSuffix(p.ImportPath, "/actortest") || !strings.Contains(p.ImportPath, "/actors/") {
			continue
		}
		checked++
		deps := goList(t, p.ImportPath, true)
		for _, d := range deps {
			if importForbidden(d.ImportPath, forbiddenDeps) {
				t.Errorf("%s depends on %s", p.ImportPath, d.ImportPath)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked only %d actor packages", checked)
	}
}

// TestCheckerFlagsViolations keeps the checker honest: a snippet with each
// kind of violation must be flagged, so the tests above cannot pass vacuously.
func TestCheckerFlagsViolations(t *testing.T) {
	const bad = `package bad

import (
	"math/rand"
	clock "time"
	"net/http"
	"github.com/asynkron/protoactor-go/actor"
)

func f() {}

func g() int {
	go f()
	_ = clock.Now()
	_ = http.StatusOK
	_ = actor.PID{}
	return rand.Int()
}
`
	const good = `package good

import "time"

func h(now time.Time) time.Time { return now.Add(time.Second) }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "bad.go", bad, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(check(fset, f), "\n")
	for _, want := range []string{"imports math/rand", "imports net/http", "imports github.com/asynkron/protoactor-go/actor",
		"go statement", "uses time.Now"} {
		if !strings.Contains(got, want) {
			t.Errorf("checker missed %q; flagged:\n%s", want, got)
		}
	}
	g, err := parser.ParseFile(fset, "good.go", good, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v := check(fset, g); len(v) != 0 {
		t.Errorf("checker flagged a clean file: %v", v)
	}
	if !importForbidden("net/http", forbiddenDeps) || importForbidden("network/x", forbiddenDeps) {
		t.Error("dependency matcher is wrong")
	}
}
