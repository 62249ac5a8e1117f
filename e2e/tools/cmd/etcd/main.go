// Command etcd is etcd's server built from the pinned go.etcd.io/etcd/server/v3
// module, for the local e2e control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
