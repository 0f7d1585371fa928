package vm

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// loadModules loads the plan's modules, each as soon as the ones it needs are in, on as many
// threads as the guest has CPUs (a load takes ~20 ms under TCG: relocations, signature check).
func loadModules(p *plan, logf func(string, ...any)) {
	done := map[string]chan struct{}{}
	for _, m := range p.Modules {
		done[m] = make(chan struct{})
	}
	sem := make(chan struct{}, runtime.NumCPU())
	var wg sync.WaitGroup
	for _, m := range p.Modules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[m])
			for _, d := range p.Deps[m] {
				if c, ok := done[d]; ok {
					<-c
				}
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			if err := loadModule("/lib/modules/"+p.Release+"/"+m, p.Params[m]); err != nil {
				logf("module %s: %v", m, err)
			}
			if d := time.Since(start); d > 200*time.Millisecond {
				logf("module %s took=%.2fs", m, d.Seconds()) // slow to load
			}
		}()
	}
	wg.Wait()
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
