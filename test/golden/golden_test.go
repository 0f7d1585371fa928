package golden

import "testing"

func TestLineDiff(t *testing.T) {
	if got, want := LineDiff("a\nb\nc", "a\nc\nd"), "- b\n+ d\n"; got != want {
		t.Errorf("LineDiff = %q, want %q", got, want)
	}
	if got := LineDiff("a\nb", "a\nb"); got != "" {
		t.Errorf("LineDiff of equal texts = %q", got)
	}
}
