package topology

import "net/netip"

// gatewaysFor picks, for the first node prefix of each family, the highest host address of its subnet
// that nobody uses. The lan namespace owns it, so the node has a real default route (iptables-mode
// clients on the node need a route covering the service CIDR) that leads nowhere.
func gatewaysFor(node []netip.Prefix, used []netip.Addr) []netip.Prefix {
	taken := map[netip.Addr]bool{}
	for _, a := range used {
		taken[a] = true
	}
	var out []netip.Prefix
	for _, v4 := range []bool{true, false} {
		pfx := firstOf(node, v4)
		if !pfx.IsValid() {
			continue
		}
		if g, ok := highestFree(pfx, taken); ok {
			out = append(out, netip.PrefixFrom(g, pfx.Bits()))
		}
	}
	return out
}

func highestFree(pfx netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, bool) {
	network := pfx.Masked().Addr()
	// Skip the broadcast address (IPv4) and, for symmetry, the last address of IPv6 subnets.
	for a := lastAddr(pfx).Prev(); a.IsValid() && a.Compare(network) > 0 && pfx.Contains(a); a = a.Prev() {
		if !taken[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Masked().Addr().AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
