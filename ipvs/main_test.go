package ipvs

import (
	"os"
	"testing"

	"github.com/switchyard/switchyard/test/topology"
)

// support is set by TestMain: the topology helpers, or why the kernel tests
// cannot run here.
var support *topology.Support

func TestMain(m *testing.M) {
	support = topology.PrepareTests("root, ip, nsenter and cgroup v2", nil)
	os.Exit(support.Run(m))
}
