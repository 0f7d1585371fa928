package topology

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Support is what a test binary that builds topologies prepares once, in TestMain:
// the helper binaries, or why topologies cannot be built on this machine.
type Support struct {
	EchoBin, ProbeBin string
	// Unsupported says why topologies (or what extra checked) cannot run here.
	Unsupported error
	// BuildErr is a failure to build the helper binaries: always a test failure.
	BuildErr error
	needs    string
	dir      string
}

// PrepareTests checks the prerequisites (and extra, if not nil), builds the echo
// server and the probe, removes what killed runs left (runs still in progress are
// spared), and closes open topologies on SIGINT and SIGTERM. needs says what the
// tests need, for the skip message. Run the tests with its Run.
func PrepareTests(needs string, extra func() error) *Support {
	s := &Support{needs: needs, Unsupported: Prerequisites()}
	if s.Unsupported == nil && extra != nil {
		s.Unsupported = extra()
	}
	if s.Unsupported != nil {
		return s
	}
	if s.dir, s.BuildErr = os.MkdirTemp("", "topology-bin-"); s.BuildErr != nil {
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s.EchoBin, s.ProbeBin, s.BuildErr = BuildBinaries(ctx, s.dir)
	if removed, err := Cleanup(false); err != nil || len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "topology: removed leftovers of killed runs %v (error: %v)\n", removed, err)
	}
	CloseOnSignal()
	return s
}

// Dir is a temporary directory that lives as long as the Support, for more binaries.
func (s *Support) Dir() string { return s.dir }

// Close removes the helper binaries.
func (s *Support) Close() error {
	if s.dir == "" {
		return nil
	}
	return os.RemoveAll(s.dir)
}

// Run is TestMain's body after PrepareTests: it runs the tests, then removes
// the helper binaries, and returns the exit code for os.Exit.
func (s *Support) Run(m *testing.M) int {
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// RequirePrereq skips the test when err says something it needs is missing, or
// fails it under CI=true, where a missing prerequisite is a broken machine.
func RequirePrereq(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %v", err)
	}
	t.Skipf("prerequisite missing: %v", err)
}

// RequireTools requires (as RequirePrereq) that the named binaries are installed.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			RequirePrereq(t, fmt.Errorf("no %s: %w", n, err))
		}
	}
}

// Require skips the test when topologies cannot be built here, or fails it when
// CI=true (a missing prerequisite is a failure there); a build failure fails.
func (s *Support) Require(t testing.TB) {
	t.Helper()
	if s.Unsupported != nil {
		msg := fmt.Sprintf("these tests need %s: %v", s.needs, s.Unsupported)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if s.BuildErr != nil {
		t.Fatalf("building the helper binaries: %v", s.BuildErr)
	}
}

// Build requires the topology prerequisites, builds s with the helper binaries,
// and closes the topology when the test ends.
func (s *Support) Build(t testing.TB, sc Scenario) *Topology {
	t.Helper()
	s.Require(t)
	sc.EchoBin, sc.ProbeBin = s.EchoBin, s.ProbeBin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	topo, err := Build(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("topology %s built in %v", topo.Prefix(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close topology %s: %v", topo.Prefix(), err)
		}
	})
	return topo
}
