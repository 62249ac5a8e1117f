package manifests_test

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// No Docker engine runs where the tests do. TestImageBinary runs the
// Dockerfile's `go build` line in a copy of the build context that
// .dockerignore leaves, checks that the binary is static and starts, and the
// rotation test then runs that same binary.

var guard struct {
	once sync.Once
	path string
	err  error
}

// guardBinary builds the image's binary once per test run.
func guardBinary(t *testing.T) string {
	t.Helper()
	guard.once.Do(func() { guard.path, guard.err = buildAsDockerfile(repoRoot(t), tmpRoot) })
	if guard.err != nil {
		t.Fatalf("building the image's binary: %v", guard.err)
	}
	return guard.path
}

// buildAsDockerfile copies the build context to tmp/context and runs the
// Dockerfile's `go build` there, for this machine's OS and architecture.
func buildAsDockerfile(root, tmp string) (string, error) {
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return "", err
	}
	line, err := goBuildLine(string(dockerfile))
	if err != nil {
		return "", err
	}
	ignore, err := readDockerignore(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return "", err
	}
	ctxDir := filepath.Join(tmp, "context")
	if err := copyContext(root, ctxDir, ignore); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "out", "cutover-guard")
	if !strings.Contains(line, "/out/cutover-guard") {
		return "", errors.New("the Dockerfile's go build does not write /out/cutover-guard")
	}
	line = strings.NewReplacer("${TARGETOS}", runtime.GOOS, "${TARGETARCH}", runtime.GOARCH, "/out/cutover-guard", out).Replace(line)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir = ctxDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New("sh -c " + line + ": " + err.Error() + "\n" + string(b))
	}
	return out, nil
}

// goBuildLine returns the shell command of the Dockerfile's RUN line that
// runs go build, without RUN and its --mount options.
func goBuildLine(dockerfile string) (string, error) {
	var found []string
	for l := range strings.SplitSeq(dockerfile, "\n") {
		fields := strings.Fields(l)
		if len(fields) == 0 || fields[0] != "RUN" || !strings.Contains(l, "go build") {
			continue
		}
		fields = fields[1:]
		for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
			fields = fields[1:]
		}
		found = append(found, strings.Join(fields, " "))
	}
	if len(found) != 1 {
		return "", errors.New("want exactly one one-line `RUN ... go build` in the Dockerfile")
	}
	return found[0], nil
}

func readDockerignore(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var patterns []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	return patterns, s.Err()
}

// ignored reports whether .dockerignore leaves rel (slash-separated) out of
// the build context. It knows the forms our .dockerignore uses: a path, a
// glob, and **/ followed by a glob on the last element.
func ignored(rel string, patterns []string) bool {
	for _, p := range patterns {
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			if m, _ := filepath.Match(rest, filepath.Base(rel)); m {
				return true
			}
			continue
		}
		if m, _ := filepath.Match(p, rel); m {
			return true
		}
	}
	return false
}

func copyContext(root, dst string, patterns []string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		rel = filepath.ToSlash(rel)
		if ignored(rel, patterns) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

func TestImageBinary(t *testing.T) {
	bin := guardBinary(t)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("not an ELF executable: %v", err)
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("dynamically linked (program header %s): distroless/static has no libc", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("needs shared libraries %v", libs)
	}

	// It starts: -h prints the flags and succeeds, a bad flag fails with 2.
	out, err := exec.CommandContext(t.Context(), bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -h: %v\n%s", bin, err, out)
	}
	for _, flag := range []string{"-cert-rotation", "-cert-dir", "-namespace", "-cert-secret-name", "-webhook-config-name"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("-h does not mention %s", flag)
		}
	}
	out, err = exec.CommandContext(t.Context(), bin, "--port=0").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--port 0") {
		t.Errorf("--port=0: %v, want exit status 2 naming the flag\n%s", err, out)
	}
}

func TestDockerignore(t *testing.T) {
	patterns, err := readDockerignore(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{
		"go.mod":                     false,
		"cmd/cutover-guard/main.go":  false,
		"certs/certs.go":             false,
		".cache":                     true,
		".git":                       true,
		"e2e":                        true,
		"webhook/testdata":           true,
		"checks/guard_test.go":       true,
		"README.md":                  true,
		"manifests":                  true,
		"charts":                     true,
		"internal/testdb":            true,
		"webhook/handler.go":         false,
		"checks/database.go":         false,
		"cmd/cutover-guard/flags.go": false,
	} {
		if got := ignored(rel, patterns); got != want {
			t.Errorf("%s ignored: %v, want %v", rel, got, want)
		}
	}
}
