package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// svcKey and svcVal mirror struct svc_key and svc_val in bpf/sock.c (the
// generated Go types are unexported). Ports are in network byte order.
type svcKey struct {
	Addr  [16]byte
	Port  uint16
	Proto uint8
	Scope uint8
	Slot  uint16
	Pad   uint16
}

type svcVal struct {
	BackendID       uint32
	SvcID           uint32
	Count           uint16
	Flags           uint8
	Pad             uint8
	AffinityTimeout uint32
}

const (
	port80BE = 80<<8 | 80>>8 // htons(80) on little-endian hosts (bpf/sock_bpfel.go is little-endian only)
	protoTCP = 6
)

// kernelMaps reads the agent's pinned maps directly: the ground truth of what is
// programmed. bpffs is shared by every network namespace, so nothing here
// enters the node.
type kernelMaps struct{ services, backends *ebpf.Map }

func openMaps(pinDir string) (*kernelMaps, error) {
	s, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "services"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	b, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "backends"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return &kernelMaps{s, b}, nil
}

func (k *kernelMaps) Close() error { return errors.Join(k.services.Close(), k.backends.Close()) }

// frontendKey is the service entry (slot 0) of service i's ClusterIP:80/TCP.
func frontendKey(i int) svcKey {
	ip := clusterIP(i)
	k := svcKey{Port: port80BE, Proto: protoTCP, Slot: 0}
	k.Addr[10], k.Addr[11] = 0xff, 0xff // IPv4-mapped
	copy(k.Addr[12:], ip[:])
	return k
}

// backendCount is the backend count programmed for service i, or -1 when the
// service has no entry.
func (k *kernelMaps) backendCount(i int) (int, error) {
	key := frontendKey(i)
	var v svcVal
	if err := k.services.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return -1, nil
		}
		return 0, err
	}
	return int(v.Count), nil
}

// census counts the maps' entries.
type census struct {
	Frontends     int `json:"frontends"`      // slot 0, port 80/TCP: the services
	AddressOnly   int `json:"address_only"`   // slot 0, port 0: a cluster IP's "refuse other ports" entry
	Slots         int `json:"slots"`          // backend slots (slot > 0)
	SlotsExpected int `json:"slots_expected"` // sum of the service entries' counts
	Backends      int `json:"backends"`       // backends map entries
}

func (k *kernelMaps) census() (census, error) {
	var c census
	var key svcKey
	var val svcVal
	it := k.services.Iterate()
	for it.Next(&key, &val) {
		switch {
		case key.Slot > 0:
			c.Slots++
		case key.Port == port80BE && key.Proto == protoTCP:
			c.Frontends++
			c.SlotsExpected += int(val.Count)
		case key.Port == 0:
			c.AddressOnly++
		}
	}
	if err := it.Err(); err != nil {
		return c, fmt.Errorf("iterate services: %w", err)
	}
	var id uint32
	var be [20]byte // struct backend
	it = k.backends.Iterate()
	for it.Next(&id, &be) {
		c.Backends++
	}
	if err := it.Err(); err != nil {
		return c, fmt.Errorf("iterate backends: %w", err)
	}
	return c, nil
}
