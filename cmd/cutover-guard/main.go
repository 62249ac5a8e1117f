// Command cutover-guard is a validating admission webhook that denies
// HTTPRoute and GRPCRoute updates that would switch traffic to a Service that
// cannot serve it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
)

func main() {
	cfg, err := parseFlags(os.Args[0], os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // -h: the usage is printed, nothing went wrong
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(newLogger(cfg.Zap))
	if err := run(ctrl.SetupSignalHandler(), cfg); err != nil {
		ctrl.Log.Error(err, "cutover-guard stopped")
		os.Exit(1)
	}
}
