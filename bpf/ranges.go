package bpf

import (
	"errors"
	"fmt"
	"net/netip"
)

// putRanges writes a service port's source ranges the kernel does not hold yet,
// before the service entry that turns them on.
func (w *Writer) putRanges(svcID uint32, prefixes []netip.Prefix) ([]rangeKey, error) {
	keys := make([]rangeKey, 0, len(prefixes))
	for _, p := range prefixes {
		k := rangeKey{svcID, p.Masked()}
		keys = append(keys, k)
		if w.rangesIn[k] {
			continue
		}
		if err := w.ranges.Put(lpmKey(k), 1); err != nil {
			return nil, fmt.Errorf("source range %s: %w", p, err)
		}
		w.rangesIn[k] = true
		w.rangesStale[k] = true // until a frontend holds it
	}
	return keys, nil
}

// setRanges moves a frontend's references to its new ranges.
func (w *Writer) setRanges(cur *programmed, ranges []rangeKey) {
	for _, k := range ranges {
		w.rangeRefs[k]++
	}
	for _, k := range cur.ranges {
		if w.rangeRefs[k]--; w.rangeRefs[k] <= 0 {
			delete(w.rangeRefs, k)
			w.rangesStale[k] = true
		}
	}
	cur.ranges = ranges
}

// releaseRanges deletes the ranges no frontend uses any more.
func (w *Writer) releaseRanges() error {
	var errs []error
	for k := range w.rangesStale {
		if w.rangeRefs[k] > 0 {
			delete(w.rangesStale, k)
			continue
		}
		if err := w.ranges.Delete(lpmKey(k)); err != nil {
			errs = append(errs, fmt.Errorf("source range %s: %w", k.prefix, err))
			continue
		}
		delete(w.rangesIn, k)
		delete(w.rangesStale, k)
	}
	return errors.Join(errs...)
}

// readRanges takes what the kernel holds; whatever no frontend claims in the
// following full sync is deleted.
func (w *Writer) readRanges() error {
	all, err := w.ranges.All()
	if err != nil {
		return err
	}
	w.rangeRefs, w.rangesIn, w.rangesStale = map[rangeKey]int{}, map[rangeKey]bool{}, map[rangeKey]bool{}
	for lk := range all {
		k := fromLPMKey(lk)
		w.rangesIn[k], w.rangesStale[k] = true, true
	}
	return nil
}

// lpmKey: the trie matches the service id exactly and then the address's
// prefix; IPv4 is IPv4-mapped, so its prefix is 96 bits longer.
func lpmKey(k rangeKey) tcRangeKey {
	bits := k.prefix.Bits()
	if k.prefix.Addr().Is4() {
		bits += 96
	}
	return tcRangeKey{Prefixlen: uint32(32 + bits), SvcId: k.svcID, Addr: addr16(k.prefix.Addr())}
}

func fromLPMKey(k tcRangeKey) rangeKey {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen) - 32
	if a.Is4In6() {
		a, bits = a.Unmap(), bits-96
	}
	return rangeKey{k.SvcId, netip.PrefixFrom(a, bits)}
}
