// Tests of the install: the kustomize manifests (offline and against a real
// kube-apiserver), the RBAC they grant, the webhook configuration's
// matchConditions, the Dockerfile's binary, and the guard's certificate
// rotation with that binary under those permissions.
package manifests_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// One control plane serves every test of the package; TestMain stops it.
var shared struct {
	once sync.Once
	c    *cluster.Cluster
	err  error
}

// tmpRoot holds what the tests build once (the guard binary); TestMain removes it.
var tmpRoot string

func TestMain(m *testing.M) {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "cutover-guard-manifests-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if c := shared.c; c != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "e2e cluster logs kept in %s\n", c.LogDir)
			c.DumpLogs(os.Stderr, 40)
		}
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e cluster stop: %v\n", err)
			code = 1
		}
	}
	_ = os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// toolsDir returns the pinned control-plane tools, or skips the test (fails
// it with testenv.RequiredEnv=1).
func toolsDir(t *testing.T) string {
	t.Helper()
	dir, err := cluster.ToolsDir()
	if err != nil {
		testenv.Unavailable(t, "control-plane tools: %v", err)
	}
	if missing := cluster.MissingTools(dir); len(missing) > 0 {
		testenv.Unavailable(t, "control-plane tools not built (make tools); missing: %s", strings.Join(missing, ", "))
	}
	return dir
}

// kubectlBin is the pinned kubectl, which also builds kustomizations.
func kubectlBin(t *testing.T) string {
	return filepath.Join(toolsDir(t), "bin", "kubectl")
}

// sharedCluster starts the package's control plane on first use.
func sharedCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	dir := toolsDir(t)
	shared.once.Do(func() {
		shared.c, shared.err = cluster.Start(context.Background(), cluster.Options{ToolsDir: dir, Logf: log.Printf})
	})
	if shared.err != nil {
		t.Fatalf("e2e cluster: %v", shared.err)
	}
	return shared.c
}

// repoRoot is the root of the module (tests run in manifests/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod above the manifests folder: %v", err)
	}
	return root
}

// overlayDir is the folder of an installable overlay.
func overlayDir(t *testing.T, overlay string) string {
	return filepath.Join(repoRoot(t), "manifests", overlay)
}

// build runs `kubectl kustomize` on an overlay and decodes every object.
func build(t *testing.T, overlay string) []*unstructured.Unstructured {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), kubectlBin(t), "kustomize", overlayDir(t, overlay)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", overlay, err, stderrOf(err))
	}
	objs, err := decodeAll(out)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", overlay, err)
	}
	return objs
}

func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

// find returns the object of that kind and name, or nil.
func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// mustFind is find that fails the test when the object is missing, decoding
// it into out.
func mustFind(t *testing.T, objs []*unstructured.Unstructured, kind, name string, out any) {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %s in the build", kind, name)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
}

// ofKinds returns the objects of the given kinds, in build order.
func ofKinds(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		for _, k := range kinds {
			if o.GetKind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// kubectl runs kubectl against c and returns its standard output.
func kubectl(t *testing.T, c *cluster.Cluster, stdin []byte, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := c.KubectlCommand(ctx, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

// applyForReal server-side applies objs to c.
func applyForReal(t *testing.T, c *cluster.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	var b bytes.Buffer
	for _, o := range objs {
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	if out, err := kubectl(t, c, b.Bytes(), "apply", "--server-side", "--field-manager=cutover-guard-test", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

func runtimeFrom(o *unstructured.Unstructured, out any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out)
}
