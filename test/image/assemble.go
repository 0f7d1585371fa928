package image

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is an image: its layers (bottom first) and what its config says.
type Spec struct {
	Ref        string // e.g. localhost/switchyard:dev
	Layers     []*Layer
	Entrypoint []string
	Env        []string
	Labels     map[string]string
}

// defaultEnv is every image's PATH (what a Debian base image sets).
var defaultEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}

// Assemble makes the OCI image of a spec for linux/amd64. The config's created
// time and every history entry's are Epoch, so the digest depends only on the
// layers and the config.
func Assemble(s Spec) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	adds := make([]mutate.Addendum, 0, len(s.Layers))
	for _, l := range s.Layers {
		adds = append(adds, mutate.Addendum{
			Layer:     l.Layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: l.Comment},
		})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = v1.Config{Entrypoint: s.Entrypoint, Env: s.Env, Labels: s.Labels}
	if cf.Config.Env == nil {
		cf.Config.Env = defaultEnv
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	return img, nil
}
