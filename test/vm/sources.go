package vm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mirrors are the Debian archive and security archive the machine's apt is configured with; the
// private apt configuration of the kernel fetch points the other suites at the same hosts.
type mirrors struct {
	archive, security, keyring string
}

const defaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// systemMirrors reads /etc/apt/sources.list{,.d/*.list,.d/*.sources} for the entries of the host's
// own Debian release (suite <codename> and <codename>-security). $SWITCHYARD_DEBIAN_MIRROR and
// $SWITCHYARD_DEBIAN_SECURITY_MIRROR override them.
func systemMirrors() (mirrors, error) {
	m := mirrors{keyring: defaultKeyring}
	codename := osReleaseField("/etc/os-release", "VERSION_CODENAME")
	var entries []sourceEntry
	var signedBy string
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		switch {
		case strings.HasSuffix(f, ".sources"):
			entries = append(entries, parseDeb822(f)...)
		case strings.HasSuffix(f, ".list"):
			entries = append(entries, parseOneLine(f)...)
		}
	}
	for _, e := range entries {
		for _, s := range e.suites {
			switch {
			case s == codename && m.archive == "":
				m.archive = e.uri
			case s == codename+"-security" && m.security == "":
				m.security = e.uri
			default:
				continue
			}
			if strings.HasPrefix(e.signedBy, "/") {
				signedBy = e.signedBy
			}
		}
	}
	if _, err := os.Stat(defaultKeyring); err != nil && signedBy != "" {
		m.keyring = signedBy // the Debian archive keyring under another name
	}
	if v := os.Getenv("SWITCHYARD_DEBIAN_MIRROR"); v != "" {
		m.archive = v
	}
	if v := os.Getenv("SWITCHYARD_DEBIAN_SECURITY_MIRROR"); v != "" {
		m.security = v
	}
	if m.archive == "" {
		return m, fmt.Errorf("no Debian mirror for suite %q in /etc/apt/sources.list*; set SWITCHYARD_DEBIAN_MIRROR", codename)
	}
	return m, nil
}

// sourcesList is the private apt sources list: main of every suite a kernel spec names, and its
// security suite when the machine has a security mirror.
func (m mirrors) sourcesList() string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, s := range specs {
		if seen[s.suite] {
			continue
		}
		seen[s.suite] = true
		fmt.Fprintf(&b, "deb [signed-by=%s] %s %s main\n", m.keyring, m.archive, s.suite)
		if m.security != "" {
			fmt.Fprintf(&b, "deb [signed-by=%s] %s %s-security main\n", m.keyring, m.security, s.suite)
		}
	}
	return b.String()
}

type sourceEntry struct {
	uri      string
	suites   []string
	signedBy string
}

func parseOneLine(file string) []sourceEntry {
	var out []sourceEntry
	forLines(file, func(line string) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			return
		}
		e := sourceEntry{}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 {
				opt := strings.Trim(f[0], "[]")
				if v, ok := strings.CutPrefix(opt, "signed-by="); ok {
					e.signedBy = v
				}
				done := strings.HasSuffix(f[0], "]")
				f = f[1:]
				if done {
					break
				}
			}
		}
		if len(f) < 2 {
			return
		}
		e.uri, e.suites = f[0], []string{f[1]}
		out = append(out, e)
	})
	return out
}

func parseDeb822(file string) []sourceEntry {
	var out []sourceEntry
	cur, isDeb := sourceEntry{}, false
	flush := func() {
		if isDeb && cur.uri != "" {
			out = append(out, cur)
		}
		cur, isDeb = sourceEntry{}, false
	}
	forLines(file, func(line string) {
		if strings.TrimSpace(line) == "" {
			flush()
			return
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") {
			return
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "types":
			isDeb = strings.Contains(" "+v+" ", " deb ")
		case "uris":
			cur.uri = strings.Fields(v)[0]
		case "suites":
			cur.suites = strings.Fields(v)
		case "signed-by":
			cur.signedBy = v
		}
	})
	flush()
	return out
}

func forLines(file string, fn func(string)) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		fn(line)
	}
}

func osReleaseField(file, key string) string {
	var val string
	forLines(file, func(line string) {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			val = strings.Trim(v, `"`)
		}
	})
	return val
}
