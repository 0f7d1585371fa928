package ipvs

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// CleanupAll removes what IPVS mode installed in the caller's network
// namespace (switchyard cleanup): its rules in both families and both iptables
// variants, its virtual services (those on the device's addresses, on a port of
// nodePorts, or in records, which may be nil), and the device. On a kernel
// without IPVS there can be no virtual service, and ip_vs is not loaded to look.
// Run it before iptables.CleanupAll, which cannot delete a chain that one of
// IPVS mode's jumps still leads to. It runs to the end: stopping halfway would
// leave jumps gone and chains behind.
func CleanupAll(nodePorts dataplane.PortRange, records Records) error {
	errs := []error{netfilter.EachInstalled(func(_ dataplane.Family, r netfilter.Restorer, j netfilter.Jumper) error {
		if err := cleanupRules(context.Background(), r, j); err != nil {
			return fmt.Errorf("ipvs rules cleanup: %w", err)
		}
		return nil
	})}
	links, err := NewKernelLinks("")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	var handle IPVS
	if Supported() == nil {
		if handle, err = NewKernelIPVS(""); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	o := Options{Model: dataplane.Config{NodePortRange: nodePorts}}
	errs = append(errs, newIPVSState(handle, links, DefaultDevice, o, records).cleanup())
	return errors.Join(errs...)
}
