package watcher

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Objects is what a set of manifests holds, in file and document order.
type Objects struct {
	Services       []*v1.Service
	EndpointSlices []*discovery.EndpointSlice
	Nodes          []*v1.Node
}

// manifest is one file's name and contents.
type manifest struct {
	name string
	data []byte
}

// Load reads a manifest file, or the .yaml, .yml and .json files of a directory
// (not its subdirectories), and decodes the Services, EndpointSlices and Nodes in
// them, with the API defaults the model relies on applied.
func Load(path string) (*Objects, error) {
	ms, err := readManifests(path)
	if err != nil {
		return nil, err
	}
	objs, _, err := parseManifests(ms, nil)
	return objs, err
}

func readManifests(path string) ([]manifest, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	names := []string{path}
	if st.IsDir() {
		if names, err = manifestFiles(path); err != nil {
			return nil, err
		}
	}
	ms := make([]manifest, 0, len(names))
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("manifests: %w", err)
		}
		ms = append(ms, manifest{n, data})
	}
	return ms, nil
}

// manifestFiles lists a directory's manifest files in name order. It stats each
// entry because ConfigMap volumes present files as symlinks.
func manifestFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	var out []string
	for _, e := range ents {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("manifests: %w", err)
		}
		if st.Mode().IsRegular() {
			out = append(out, p)
		}
	}
	return out, nil
}

// hashManifests fingerprints names and contents, so a poll can tell whether
// anything changed without decoding.
func hashManifests(ms []manifest) [sha256.Size]byte {
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%d:%s\n%d:", len(m.name), m.name, len(m.data))
		h.Write(m.data)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// parseManifests parses every manifest. With a cache of the last good parse,
// documents whose text did not change are not decoded again and keep their
// objects (the same pointers, so a diff skips them cheaply); it returns the cache
// for the next parse.
func parseManifests(ms []manifest, cache docCache) (*Objects, docCache, error) {
	p := &parser{objs: &Objects{}, seen: map[string]location{}, cache: cache, next: docCache{}}
	for _, m := range ms {
		if err := p.file(m); err != nil {
			return nil, nil, err
		}
	}
	return p.objs, p.next, nil
}

// file parses one manifest. Documents are numbered from 1 in error messages,
// counting only those with content, so "document 2" is the second object.
func (p *parser) file(m manifest) error {
	docs := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(m.data)))
	doc := 0
	for {
		y, err := docs.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return location{file: m.name, doc: doc + 1}.wrap(err)
		}
		if p.reuse(y, m.name, doc+1) {
			doc++
			continue
		}
		j, err := yaml.YAMLToJSONStrict(y)
		if err == nil && bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue // empty, or only comments
		}
		doc++
		loc := location{file: m.name, doc: doc}
		if err != nil {
			return loc.wrap(err)
		}
		if err := p.decode(y, j, loc); err != nil {
			return err
		}
	}
}

// location names an object in the manifests for error messages.
type location struct {
	file      string
	doc, item int // item is 1-based within a List, 0 outside one
	kind      string
	namespace string // "" for cluster-scoped objects
	name      string
}

func (l location) String() string {
	s := fmt.Sprintf("%s: document %d", l.file, l.doc)
	if l.item > 0 {
		s += fmt.Sprintf(" item %d", l.item)
	}
	switch {
	case l.kind == "":
	case l.name == "":
		s += " (" + l.kind + ")"
	case l.namespace == "":
		s += " (" + l.kind + " " + l.name + ")"
	default:
		s += " (" + l.kind + " " + l.namespace + "/" + l.name + ")"
	}
	return s
}

func (l location) wrap(err error) error { return fmt.Errorf("%s: %w", l, err) }

// strictUnmarshal decodes JSON the way the API server does in strict mode: field
// names are case-sensitive, and unknown or duplicate fields are errors.
func strictUnmarshal(j []byte, into any) error {
	strict, err := sigsjson.UnmarshalStrict(j, into)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// header is what every object has; it is read leniently to name the object in
// errors before the strict decode.
type header struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}
