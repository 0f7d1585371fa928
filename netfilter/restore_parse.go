package netfilter

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// restoreBuiltinChains are the built-in chains of each table, in iptables-save's order.
var restoreBuiltinChains = map[string][]string{
	"filter":   {"INPUT", "FORWARD", "OUTPUT"},
	"nat":      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle":   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":      {"PREROUTING", "OUTPUT"},
	"security": {"INPUT", "FORWARD", "OUTPUT"},
}

func isBuiltinChain(table, chain string) bool {
	for _, c := range restoreBuiltinChains[table] {
		if c == chain {
			return true
		}
	}
	return false
}

// restoreField is one word of a restore line: raw as written (quotes included), value unquoted.
type restoreField struct{ raw, value string }

// splitRestoreFields splits a line as iptables-restore does: on blanks, with double quotes
// grouping words (a comment) and a backslash escaping a quote inside them.
func splitRestoreFields(line string) ([]restoreField, error) {
	var fields []restoreField
	var raw, val strings.Builder
	inWord, quoted := false, false
	flush := func() {
		if inWord {
			fields = append(fields, restoreField{raw: raw.String(), value: val.String()})
		}
		raw.Reset()
		val.Reset()
		inWord = false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line) && line[i+1] == '"':
			raw.WriteString(`\"`)
			val.WriteByte('"')
			i++
		case c == '"':
			quoted, inWord = !quoted, true
			raw.WriteByte(c)
		case !quoted && (c == ' ' || c == '\t'):
			flush()
		default:
			inWord = true
			raw.WriteByte(c)
			val.WriteByte(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	flush()
	return fields, nil
}

// joinRaw puts fields back together with single blanks: the normal form the fake stores rules in.
func joinRaw(fields []restoreField) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.raw
	}
	return strings.Join(parts, " ")
}

// ParseSave splits iptables-save output for one table into its chains: chain name -> the chain's
// rules as complete "-A CHAIN ..." lines, in order. Every chain the table has is a key, also the
// empty ones and the built-in ones. Comment lines and counters are ignored; the other tables of
// the output, if any, too.
func ParseSave(data []byte, table string) (map[string][]string, error) {
	chains := map[string][]string{}
	in, seen := false, false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '*':
			in = line[1:] == table
			seen = seen || in
		case !in:
		case line == "COMMIT":
			in = false
		case line[0] == ':':
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := chains[name]; !ok {
				chains[name] = []string{}
			}
		case strings.HasPrefix(line, "-A "):
			name, _, _ := strings.Cut(line[len("-A "):], " ")
			chains[name] = append(chains[name], line)
		default:
			return nil, fmt.Errorf("iptables-save output line %d: unexpected %q", n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, fmt.Errorf("iptables-save output has no table %q", table)
	}
	return chains, nil
}
