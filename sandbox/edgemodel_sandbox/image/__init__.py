"""The EdgeModel runtime image built without Docker: a reproducible multi-arch OCI index.

`build` makes (or reuses) build/image/edgemodel-runtime.oci.tar and build/image/pause.oci.tar;
`spec` declares what the image is (the Dockerfile is held to it); `oci` writes the layout;
`base` caches the Debian root filesystems; `binfmt` runs arm64 code under qemu.
See docs/architecture.md ("Images without Docker").
"""
