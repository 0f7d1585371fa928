package vm

// outb writes a byte to an I/O port (the caller holds ioperm for it).
//
//go:noescape
func outb(port uint16, val uint8)
