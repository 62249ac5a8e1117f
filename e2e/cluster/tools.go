package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ToolsEnv names the environment variable that points at the tools folder
// filled by hack/build-tools.sh. Unset, the folder is <repo>/.cache/tools.
const ToolsEnv = "CUTOVER_GUARD_TOOLS"

const rootModule = "github.com/cutover-guard/cutover-guard"

// Binaries lists the executables the harness needs in <tools>/bin.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}

// Paths below the tools folder.
const (
	binSubdir        = "bin"
	kwokStagesSubdir = "kwok/stages"
	gatewayCRDSubdir = "crds/gateway-api"
)

// ToolsDir returns the tools folder: $CUTOVER_GUARD_TOOLS if set, otherwise
// .cache/tools in the root of the repository that contains the working
// directory.
func ToolsDir() (string, error) {
	if d := os.Getenv(ToolsEnv); d != "" {
		return filepath.Abs(d)
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%s is not set and %w", ToolsEnv, err)
	}
	return filepath.Join(root, ".cache", "tools"), nil
}

// MissingTools lists what hack/build-tools.sh should have put in dir but is
// not there. Empty means the harness can run.
func MissingTools(dir string) []string {
	var missing []string
	for _, b := range Binaries {
		p := filepath.Join(dir, binSubdir, b)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	for _, d := range []string{kwokStagesSubdir, gatewayCRDSubdir} {
		p := filepath.Join(dir, d)
		matches, _ := filepath.Glob(filepath.Join(p, "*.yaml"))
		if len(matches) == 0 {
			missing = append(missing, p+"/*.yaml")
		}
	}
	return missing
}

// repoRoot walks up from the working directory to the go.mod of the root module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == rootModule {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module " + rootModule + " above the working directory")
		}
		dir = parent
	}
}

func modulePath(goMod string) string {
	f, err := os.Open(goMod)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
