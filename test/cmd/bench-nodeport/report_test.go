package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func res(rps float64, peer string) *loadResult {
	return &loadResult{RPS: rps, Endpoints: map[string]int64{"10.0.1.1:8080": 3, "10.0.1.2:8080": 1},
		Peers: map[string]int64{peer: 4}}
}

// Medians over rounds, ratios to the direct path, and a failed target reported
// after the table while the others are printed.
func TestReport(t *testing.T) {
	r := &report{Pods: 2, Workers: 4, Duration: 5, Rounds: 3, Targets: []targetReport{
		{Target: "direct", Shapes: []shapeReport{{Shape: "conn", Rounds: []*loadResult{
			res(1000, clientIP), res(900, clientIP), res(1100, clientIP)}}, {Shape: "udp", Rounds: []*loadResult{
			res(500, clientIP), res(500, clientIP), res(500, clientIP)}}}},
		{Target: "kube-proxy-nftables", Shapes: []shapeReport{{Shape: "conn", Rounds: []*loadResult{
			res(800, nodeIP), res(950, nodeIP), res(700, nodeIP)}}, {Shape: "udp", Rounds: []*loadResult{
			res(450, nodeIP), res(400, nodeIP), res(300, nodeIP)}}}},
		{Target: "switchyard-ebpf", Error: "check: no answer\nlog line"},
	}}
	r.summarize()
	kp := r.Targets[1].Shapes[0]
	if kp.RPS != 800 || kp.RPSMin != 700 || kp.RPSMax != 950 || kp.VsDirect != 0.8 || kp.Median != 0 {
		t.Errorf("kube-proxy: %+v", kp)
	}
	if !r.failed() {
		t.Error("a target failed: the run failed")
	}
	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{
		"kube-proxy-nftables  new connection per request  800    700-950   0.80",
		"kube-proxy-nftables  UDP, socket per request     400    300-450   0.80",
		"2 (75/25%)            192.168.0.2",
		"\nswitchyard-ebpf: error: check: no answer\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "log line") {
		t.Errorf("the table shows only an error's first line:\n%s", out.String())
	}
}

func TestList(t *testing.T) {
	if got, err := list("direct, switchyard-ebpf", allTargets); err != nil || len(got) != 2 {
		t.Errorf("%v %v", got, err)
	}
	for _, bad := range []string{"", "direct,direct", "kube-proxy-iptables"} {
		if _, err := list(bad, allTargets); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRoundOrderAlternates(t *testing.T) {
	for _, c := range []struct {
		n, r int
		want []int
	}{{3, 1, []int{0, 1, 2}}, {3, 2, []int{2, 1, 0}}, {2, 3, []int{0, 1}}, {1, 2, []int{0}}} {
		if got := roundOrder(c.n, c.r); !slices.Equal(got, c.want) {
			t.Errorf("roundOrder(%d, %d) = %v, want %v", c.n, c.r, got, c.want)
		}
	}
}
