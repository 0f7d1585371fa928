// Package image builds the project's container images as OCI image archives,
// with github.com/google/go-containerregistry and no registry, container
// daemon, podman or buildah:
//
//   - switchyard (localhost/switchyard:dev): the static agent at /switchyard on
//     a layer of the Debian tools its modes run (iptables and ip6tables, legacy
//     and nft, with -save and -restore; the xtables extension modules; nft;
//     modprobe) and exactly the shared libraries they load.
//   - kube-proxy (localhost/kube-proxy:v1.37.2): test/k8s/build.sh's kube-proxy
//     at /usr/local/bin/kube-proxy on the same tools layer, plus a layer with
//     ipset and the unsuffixed iptables names (pointing at the nft variant).
//   - test (localhost/switchyard-test:dev): /echo, /probe and /loadgen.
//   - pause (localhost/pause:dev): /pause (test/cmd/pause).
//
// A harness builds one with
//
//	res, err := image.Build(ctx, "pause", dir)
//	// res.Path is dir/pause-image.tar, res.Ref localhost/pause:dev, res.Digest
//	// what `ctr images ls` shows after `ctr -n k8s.io images import res.Path`.
//
// or, to build several and read the Debian packages once,
// image.NewBuilder(image.Options{...}).Build(ctx, name, dir) for each.
//
// The Debian side: apt resolves the candidate version of each tool's package
// and, transitively, of the lib* packages it depends on (apt.go); `apt-get
// download` fetches the .debs once into ${SWITCHYARD_CACHE:-~/.cache/switchyard}/debs,
// checked against the index's SHA256 (fetch.go); `dpkg-deb --fsys-tarfile`
// streams each one's files into an in-memory usrmerged tree (deb.go, tree.go);
// and the ELF closure (closure.go: PT_INTERP and DT_NEEDED, found where the
// loader looks) picks the files an image needs. The package=version list of
// what an image holds is its io.switchyard.debian-packages label.
//
// Reproducible: every tar entry is sorted, root-owned and dated Epoch, the
// config's created time and history are Epoch, the Go binaries are built with
// -trimpath and -buildvcs=false, and the gzip is Go's own: the same commit and
// .deb versions (and Go release) give the same digest (layer.go, assemble.go).
//
// The archive (archive.go) is an OCI layout (oci-layout, index.json naming the
// image in io.containerd.image.name and org.opencontainers.image.ref.name,
// blobs/sha256/...) that also holds a Docker manifest.json with RepoTags:
// containerd 1.6's `ctr images import` and `docker load` both take it.
package image
