package ipvs

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/switchyard/switchyard/dataplane"
)

const (
	// DefaultDevice carries the service addresses, as kube-ipvs0 does for
	// kube-proxy; the name is Switchyard's so the two never share a device.
	DefaultDevice = "swyd-ipvs0"
	// DefaultScheduler is kube-proxy's default --ipvs-scheduler.
	DefaultScheduler = "rr"
	// DefaultRecordsPath is where the agent records the virtual services it could
	// not recognise as its own after a restart (see Records). /run goes away with
	// the kernel's IPVS tables, at reboot.
	DefaultRecordsPath = "/run/switchyard/ipvs-services"
)

// Virtual service flags, the kernel's IP_VS_SVC_F_*.
const (
	// FlagPersistent: ClientIP affinity (ipvsadm -p), with Timeout seconds.
	FlagPersistent uint32 = 0x1
	// FlagHashed is set by the kernel on every service it holds; it is never part
	// of a wanted service and readers drop it.
	FlagHashed uint32 = 0x2
	// FlagSourceHash is IP_VS_SVC_F_SCHED2: the mh scheduler hashes the source
	// port too. kube-proxy sets it with mh, so connections of one client spread.
	FlagSourceHash uint32 = 0x10
)

// VirtualService is an IPVS virtual service: the frontend key the kernel matches
// packets on, and its options.
type VirtualService struct {
	dataplane.FrontendKey
	Scheduler string
	Flags     uint32
	// Timeout is the persistence timeout in seconds (FlagPersistent).
	Timeout uint32
}

// Destination is a real server of a virtual service. Switchyard's always forward
// by masquerading (IPVS NAT), as kube-proxy's do.
type Destination struct {
	Addr   netip.Addr
	Port   uint16
	Weight int
	// ActiveConns and InactiveConns are the kernel's counts (reads only): a
	// destination that is being removed stays, at weight 0, while it has any.
	ActiveConns, InactiveConns int
}

func (d Destination) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

func (d Destination) String() string { return fmt.Sprintf("%s weight %d", d.AddrPort(), d.Weight) }

// IPVS is the kernel's IPVS table of one network namespace: virtual services and
// their destinations. The errors are the kernel's (EEXIST, ESRCH, ENOENT...).
type IPVS interface {
	// Services lists the virtual services that have an address (firewall-mark
	// services are never Switchyard's and are left out).
	Services() ([]VirtualService, error)
	AddService(VirtualService) error
	// UpdateService changes the scheduler, flags and timeout of a service.
	UpdateService(VirtualService) error
	DeleteService(dataplane.FrontendKey) error
	Destinations(dataplane.FrontendKey) ([]Destination, error)
	AddDestination(dataplane.FrontendKey, Destination) error
	// UpdateDestination changes a destination's weight.
	UpdateDestination(dataplane.FrontendKey, Destination) error
	DeleteDestination(dataplane.FrontendKey, netip.AddrPort) error
}

// ErrNoDevice is what Links returns for a device that does not exist.
var ErrNoDevice = errors.New("no such network device")

// Links is the netlink side of IPVS mode: the dummy device that makes the
// service addresses local (IPVS only sees packets addressed to the node), its
// addresses, and the node's other addresses.
type Links interface {
	// EnsureDummy creates the dummy device unless it exists, and sets it up (IPv6
	// addresses on a device that is down are not usable).
	EnsureDummy(name string) error
	// DeleteDummy removes the device; a missing one is no error, a device of that
	// name that is not a dummy is.
	DeleteDummy(name string) error
	// Addrs lists the device's addresses (ErrNoDevice if it is missing).
	Addrs(name string) ([]netip.Addr, error)
	// AddAddr puts a /32 (/128) on the device; one that is there already is no
	// error, nor is DelAddr of one that is not.
	AddAddr(name string, a netip.Addr) error
	DelAddr(name string, a netip.Addr) error
	// LocalAddrs lists the addresses of every other device of the namespace.
	LocalAddrs(except string) ([]netip.Addr, error)
}
