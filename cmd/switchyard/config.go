package main

import (
	"fmt"
	"os"
	"slices"
	"sort"

	"k8s.io/klog/v2"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"
)

const (
	configAPIVersion = "kubeproxy.config.k8s.io/v1alpha1"
	configKind       = "KubeProxyConfiguration"
)

// appliedConfigFields are the KubeProxyConfiguration fields Switchyard maps onto
// its flags; any other field that is set is reported as ignored.
var appliedConfigFields = []string{
	"apiVersion", "kind",
	"clientConnection.kubeconfig", "hostnameOverride", "mode", "clusterCIDR", "nodePortAddresses",
	"healthzBindAddress", "metricsBindAddress",
	"iptables.localhostNodePorts", "iptables.masqueradeAll", "iptables.masqueradeBit", "iptables.syncPeriod", "iptables.minSyncPeriod",
	"ipvs.syncPeriod", "ipvs.minSyncPeriod",
	"nftables.masqueradeAll", "nftables.syncPeriod", "nftables.minSyncPeriod",
}

// applyConfigFile reads a KubeProxyConfiguration and sets every option that was not
// given on the command line.
func (o *options) applyConfigFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("--config: %w", err)}
	}
	bad := func(format string, args ...any) error {
		return usageError{fmt.Errorf("--config %s: %s", path, fmt.Sprintf(format, args...))}
	}
	var cfg kpconfig.KubeProxyConfiguration
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return bad("%v", err)
	}
	if cfg.APIVersion != configAPIVersion || cfg.Kind != configKind {
		return bad("want apiVersion %s and kind %s, got %q and %q", configAPIVersion, configKind, cfg.APIVersion, cfg.Kind)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return bad("%v", err)
	}
	if ignored := ignoredFields(raw); len(ignored) > 0 {
		klog.InfoS("Config file fields that Switchyard does not use are ignored", "file", path, "fields", ignored)
	}

	mode, err := modeFromConfig(string(cfg.Mode))
	if err != nil {
		return bad("%v", err)
	}
	o.setString("mode", &o.mode, mode)
	o.setString("kubeconfig", &o.kubeconfig, cfg.ClientConnection.Kubeconfig)
	o.setString("hostname-override", &o.hostnameOverride, cfg.HostnameOverride)
	o.setString("cluster-cidr", &o.clusterCIDR, cfg.ClusterCIDR)
	o.setString("healthz-bind-address", &o.healthzBindAddress, cfg.HealthzBindAddress)
	o.setString("metrics-bind-address", &o.metricsBindAddress, cfg.MetricsBindAddress)
	if len(cfg.NodePortAddresses) > 0 && !o.flags.Changed("nodeport-addresses") {
		o.nodePortAddresses = cfg.NodePortAddresses
	}
	if cfg.IPTables.LocalhostNodePorts != nil && !o.flags.Changed("localhost-nodeports") {
		o.localhostNodePorts = *cfg.IPTables.LocalhostNodePorts
	}
	if cfg.IPTables.MasqueradeBit != nil && !o.flags.Changed("iptables-masquerade-bit") {
		o.masqueradeBit = *cfg.IPTables.MasqueradeBit
	}
	if (cfg.IPTables.MasqueradeAll || cfg.NFTables.MasqueradeAll) && !o.flags.Changed("masquerade-all") {
		o.masqueradeAll = true
	}
	// The periods live in the section of kube-proxy's mode; take the one that
	// matches ours, else the iptables one.
	sync, minSync := cfg.IPTables.SyncPeriod.Duration, cfg.IPTables.MinSyncPeriod.Duration
	if o.mode == "ipvs" {
		sync, minSync = cfg.IPVS.SyncPeriod.Duration, cfg.IPVS.MinSyncPeriod.Duration
	}
	if cfg.Mode == "nftables" {
		sync, minSync = cfg.NFTables.SyncPeriod.Duration, cfg.NFTables.MinSyncPeriod.Duration
	}
	if sync != 0 && !o.flags.Changed("sync-period") {
		o.syncPeriod = sync
	}
	if minSync != 0 && !o.flags.Changed("min-sync-period") {
		o.minSyncPeriod = minSync
	}
	return nil
}

func (o *options) setString(flag string, dst *string, v string) {
	if v != "" && !o.flags.Changed(flag) {
		*dst = v
	}
}

// modeFromConfig maps kube-proxy's modes onto Switchyard's. nftables has no
// Switchyard counterpart of its own: auto picks the best dataplane.
func modeFromConfig(m string) (string, error) {
	switch m {
	case "", "nftables":
		return "auto", nil
	case "iptables", "ipvs":
		return m, nil
	}
	return "", fmt.Errorf("mode %q is not supported; use iptables, ipvs, nftables or leave it empty", m)
}

// ignoredFields lists the set leaves of the config that Switchyard does not use.
func ignoredFields(raw map[string]any) []string {
	var out []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			if !isZero(v) && !slices.Contains(appliedConfigFields, prefix) {
				out = append(out, prefix)
			}
			return
		}
		for k, child := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, child)
		}
	}
	walk("", raw)
	sort.Strings(out)
	return out
}

func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	case float64:
		return v == 0
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}
