package tutorial

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// RequiredEnv names the environment variable that, set to 1, makes missing
// tools or databases a failure of an end-to-end suite instead of a skip
// (`make test` sets it).
const RequiredEnv = "CUTOVER_GUARD_E2E_REQUIRED"

// Preflight returns the control-plane tools folder, or why an end-to-end
// suite cannot run here (skip is then non-empty): the tools are not built,
// or a database server in dbAddrs (host:port) does not accept connections.
func Preflight(dbAddrs ...string) (toolsDir, skip string) {
	toolsDir, err := cluster.ToolsDir()
	if err != nil {
		return "", err.Error()
	}
	if missing := cluster.MissingTools(toolsDir); len(missing) > 0 {
		return "", "control-plane tools not built (run hack/build-tools.sh or set " + cluster.ToolsEnv + "); missing: " + strings.Join(missing, ", ")
	}
	for _, addr := range dbAddrs {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return "", fmt.Sprintf("local database server %s not answering (.ci/run starts it): %v", addr, err)
		}
		c.Close()
	}
	return toolsDir, ""
}
