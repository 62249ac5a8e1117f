// Command kubectl-cutover is the kubectl plugin for guarded blue-green
// cutovers: `kubectl cutover status|check|switch|rollback|history`. It asks
// the API server to dry-run every switch, so the cutover-guard webhook
// decides, never the plugin.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cutover-guard/cutover-guard/internal/cutoverctl"
)

func main() {
	os.Exit(cutoverctl.Main(os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}
