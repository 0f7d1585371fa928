package dataplane

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sync loop's metrics, named like kube-proxy's so existing
// dashboards and alerts keep working.
type Metrics struct {
	SyncDuration        prometheus.Histogram
	FullSyncDuration    prometheus.Histogram
	PartialSyncDuration prometheus.Histogram
	NetworkProgramming  prometheus.Histogram
	LastSync            prometheus.Gauge
	LastQueued          prometheus.Gauge
	ServiceChangesPend  prometheus.Gauge
	ServiceChangesTotal prometheus.Counter
	EndpointChangesPend prometheus.Gauge
	EndpointChangesTot  prometheus.Counter
	NoLocalEndpoints    *prometheus.GaugeVec
	SyncErrors          prometheus.Counter
	Rejected            prometheus.Gauge
	Frontends           prometheus.Gauge
	Services            prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	syncBuckets := prometheus.ExponentialBuckets(0.001, 2, 15)
	m := &Metrics{
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds", Buckets: syncBuckets}),
		FullSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_full_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: syncBuckets}),
		PartialSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_partial_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: syncBuckets}),
		NetworkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_network_programming_duration_seconds", Help: "In Cluster Network Programming Latency in seconds",
			Buckets: networkProgrammingBuckets()}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds", Help: "The last time proxy rules were successfully synced"}),
		LastQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", Help: "The last time a sync of proxy rules was queued"}),
		ServiceChangesPend: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_service_changes_pending", Help: "Pending proxy rules Service changes"}),
		ServiceChangesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_service_changes_total", Help: "Cumulative proxy rules Service changes"}),
		EndpointChangesPend: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_endpoint_changes_pending", Help: "Pending proxy rules Endpoint changes"}),
		EndpointChangesTot: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_endpoint_changes_total", Help: "Cumulative proxy rules Endpoint changes"}),
		NoLocalEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
			Help: "Number of services with a Local traffic policy and no endpoints"}, []string{"traffic_policy"}),
		SyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_sync_errors_total", Help: "Syncs that failed and forced the next one to be full"}),
		Rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_frontends_not_programmed", Help: "Frontends the backend refused (a full map, too many backends) and has not programmed since"}),
		Frontends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_frontends", Help: "Frontends (address, port, protocol) in the desired state"}),
		Services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_services", Help: "Services in the desired state"}),
	}
	reg.MustRegister(m.SyncDuration, m.FullSyncDuration, m.PartialSyncDuration, m.NetworkProgramming, m.LastSync,
		m.LastQueued, m.ServiceChangesPend, m.ServiceChangesTotal, m.EndpointChangesPend, m.EndpointChangesTot,
		m.NoLocalEndpoints, m.SyncErrors, m.Rejected, m.Frontends, m.Services)
	return m
}

// networkProgrammingBuckets are kube-proxy's: fine below a minute, coarse above.
func networkProgrammingBuckets() []float64 {
	var b []float64
	b = append(b, prometheus.LinearBuckets(0.25, 0.25, 2)...)
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	b = append(b, prometheus.LinearBuckets(120, 30, 7)...)
	return b
}

// observeSync records a successful sync.
func (m *Metrics) observeSync(start, end time.Time, full bool, st *State, triggers []time.Time) {
	d := end.Sub(start).Seconds()
	m.SyncDuration.Observe(d)
	if full {
		m.FullSyncDuration.Observe(d)
	} else {
		m.PartialSyncDuration.Observe(d)
	}
	for _, t := range triggers {
		m.NetworkProgramming.Observe(end.Sub(t).Seconds())
	}
	m.LastSync.Set(float64(end.UnixNano()) / 1e9)
	m.Frontends.Set(float64(len(st.Frontends)))
	m.Services.Set(float64(len(st.Services)))
	internal, external := noLocalEndpoints(st)
	m.NoLocalEndpoints.WithLabelValues("internal").Set(float64(internal))
	m.NoLocalEndpoints.WithLabelValues("external").Set(float64(external))
}

// noLocalEndpoints counts service ports whose Local policy leaves them with no
// endpoint here while endpoints exist elsewhere (the DROP case).
func noLocalEndpoints(st *State) (internal, external int) {
	seenI, seenE := map[ServicePort]bool{}, map[ServicePort]bool{}
	for _, f := range st.Frontends {
		if f.Type == ClusterIP && f.InternalTrafficLocal && f.Pod.Verdict == Drop && !seenI[f.Service] {
			seenI[f.Service] = true
			internal++
		}
		if f.Type != ClusterIP && f.ExternalTrafficLocal && f.Outside.Verdict == Drop && !seenE[f.Service] {
			seenE[f.Service] = true
			external++
		}
	}
	return internal, external
}
