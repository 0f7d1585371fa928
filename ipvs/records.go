package ipvs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
)

// Records keeps the keys of the virtual services Switchyard made that nothing
// in the kernel marks as its own: those on an address the device does not carry
// (an externalIP or LoadBalancer IP that is already an address of the node)
// with a port outside --node-port-range. Without the record a restarted agent
// could not tell such a service, once its Service was deleted, from somebody
// else's, and would leave it behind.
type Records interface {
	Load() ([]dataplane.FrontendKey, error)
	Store([]dataplane.FrontendKey) error
}

// FileRecords keeps the records in a file, one key a line ("10.0.0.1:80/TCP").
// A missing file is an empty record.
type FileRecords struct{ Path string }

func (f FileRecords) Load() ([]dataplane.FrontendKey, error) {
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []dataplane.FrontendKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, err := parseKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", f.Path, n, err)
		}
		out = append(out, k)
	}
	return out, sc.Err()
}

// Store replaces the file atomically (a rename), so a crash never leaves half
// a record.
func (f FileRecords) Store(keys []dataplane.FrontendKey) error {
	if len(keys) == 0 {
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.String() + "\n")
	}
	tmp := f.Path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.Path)
}

func parseKey(s string) (dataplane.FrontendKey, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return dataplane.FrontendKey{}, fmt.Errorf("bad key %q", s)
	}
	ap, err := netip.ParseAddrPort(s[:i])
	p := dataplane.Protocol(s[i+1:])
	if err != nil || (p != dataplane.TCP && p != dataplane.UDP && p != dataplane.SCTP) {
		return dataplane.FrontendKey{}, fmt.Errorf("bad key %q", s)
	}
	return dataplane.FrontendKey{Addr: ap.Addr().Unmap(), Port: ap.Port(), Protocol: p}, nil
}

// MemRecords keeps the records in memory, for tests (a restarted agent is given
// the same MemRecords).
type MemRecords struct {
	Keys []dataplane.FrontendKey
	// Err, if set, fails every call.
	Err error
}

func (m *MemRecords) Load() ([]dataplane.FrontendKey, error) { return slices.Clone(m.Keys), m.Err }

func (m *MemRecords) Store(keys []dataplane.FrontendKey) error {
	if m.Err != nil {
		return m.Err
	}
	m.Keys = slices.Clone(keys)
	return nil
}

func (s *ipvsState) loadRecords() error {
	if s.recorded != nil {
		return nil
	}
	s.recorded = map[dataplane.FrontendKey]bool{}
	if s.records == nil {
		return nil
	}
	keys, err := s.records.Load()
	if err != nil {
		s.recorded = nil
		return fmt.Errorf("ipvs records: %w", err)
	}
	for _, k := range keys {
		s.recorded[k] = true
	}
	return nil
}

// record keeps the records in step with the kernel. Before programming (grow)
// it adds the keys about to be created that ours() would not know, so a crash
// right after never loses one; afterwards it keeps the recorded keys that are
// still in the kernel.
func (s *ipvsState) record(want map[dataplane.FrontendKey]*Wanted, grow bool) error {
	if s.records == nil {
		return nil
	}
	next := maps.Clone(s.recorded)
	if next == nil {
		next = map[dataplane.FrontendKey]bool{}
	}
	for k, w := range want {
		if grow && w != nil && !s.recognisable(k, w) {
			next[k] = true
		}
	}
	if !grow {
		for k := range next {
			if s.services[k] == nil {
				delete(next, k)
			}
		}
	}
	if maps.Equal(next, s.recorded) {
		return nil
	}
	if err := s.records.Store(slices.SortedFunc(maps.Keys(next), compareKeys)); err != nil {
		return fmt.Errorf("ipvs records: %w", err)
	}
	s.recorded = next
	return nil
}
