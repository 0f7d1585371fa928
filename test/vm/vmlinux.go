package vm

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// extractVmlinux writes the ELF kernel inside a bzImage to out. The bzImage's setup header says
// where the compressed payload is (boot protocol 2.08+); the payload is decompressed with the
// host's tool for its format. Every format but gzip has the uncompressed size appended (4 bytes),
// which the tools would take for trailing garbage.
func extractVmlinux(ctx context.Context, bzImage, out string) error {
	img, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return errors.New("not a bzImage")
	}
	setupSects := int(img[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := start + int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if off+n > len(img) || n < 8 {
		return fmt.Errorf("payload %d+%d outside the image (%d bytes)", off, n, len(img))
	}
	payload := img[off : off+n]
	var tool []string
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		tool = []string{"gzip", "-dc"}
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}):
		tool = []string{"lz4", "-dc"}
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = []string{"zstd", "-dcq"}
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		tool = []string{"xz", "-dc"}
	default:
		return fmt.Errorf("unknown payload compression % x", payload[:4])
	}
	if tool[0] != "gzip" {
		payload = payload[:len(payload)-4]
	}
	path, err := lookTool(tool[0])
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, tool[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	vmlinux, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", tool[0], err, stderr.String())
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("decompressed payload: %w", err)
	}
	f.Close()
	return os.WriteFile(out, vmlinux, 0o644)
}
