package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/switchyard/switchyard/test/vm"
)

func TestPrograms(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"b.test": 0o755, "a.test": 0o755, "notes.txt": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "a.test")
	got, err := programs([]string{bin, "-test.v", "-test.run=X", "--", "-C", dir, bin, "--", "--", dir, "-test.short"})
	if err != nil {
		t.Fatal(err)
	}
	want := []vm.Program{
		{Path: bin, Args: []string{"-test.v", "-test.run=X"}},
		{Path: bin, Args: []string{}, Dir: dir},
		{Path: filepath.Join(dir, "a.test"), Args: []string{"-test.short"}},
		{Path: filepath.Join(dir, "b.test"), Args: []string{"-test.short"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("programs\n%+v\nwant\n%+v", got, want)
	}
	if _, err := programs([]string{"--"}); err == nil {
		t.Error("no program: no error")
	}
}
