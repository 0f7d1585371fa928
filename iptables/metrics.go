package iptables

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are kube-proxy's iptables-mode metrics, with its names and labels.
type metrics struct {
	restoreFailures, partialFailures *prometheus.CounterVec
	rules                            *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		restoreFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
			Help: "Cumulative proxy iptables restore failures"}, []string{"ip_family"}),
		partialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
			Help: "Cumulative proxy iptables partial restore failures"}, []string{"ip_family"}),
		rules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_iptables_total",
			Help: "Total number of iptables rules owned by the proxy"}, []string{"table", "ip_family"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.restoreFailures, m.partialFailures, m.rules} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// synced records one family's sync: a failed restore, or the rules it now owns.
func (m *metrics) synced(f *familySync, partial bool, err error) {
	fam := f.cfg.Family.String()
	if err != nil {
		m.restoreFailures.WithLabelValues(fam).Inc()
		if partial {
			m.partialFailures.WithLabelValues(fam).Inc()
		}
		return
	}
	for _, t := range tables {
		n := 0
		for _, rules := range f.kernel[t] {
			n += len(rules)
		}
		m.rules.WithLabelValues(t, fam).Set(float64(n))
	}
}
