package main

import "runtime/debug"

// buildVersion is the guard's module version as the Go toolchain stamped
// it (a tagged `go install`), or "dev" for a build from a working tree. It
// names the guard in the smoke gate's User-Agent.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
