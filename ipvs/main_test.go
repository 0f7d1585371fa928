package ipvs

import (
	"fmt"
	"os"
	"testing"

	"github.com/switchyard/switchyard/test/topology"
)

// support is set by TestMain: the topology helpers, or why the kernel tests
// cannot run here.
var support *topology.Support

func TestMain(m *testing.M) {
	support = topology.PrepareTests("root, ip, nsenter and cgroup v2", nil)
	code := m.Run()
	if err := support.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
