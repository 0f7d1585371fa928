// Command pause is the process of a test pod's sandbox (the pause image,
// localhost/pause:dev): it holds the pod's namespaces open and does nothing
// until the runtime stops it with SIGTERM (or SIGINT), then exits 0. It reaps
// no children: the harness's pods do not share their PID namespace.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
