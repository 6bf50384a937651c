# syntax=docker/dockerfile:1
# Atlas container image: one static binary plus CA certificates.
#
# Built per architecture on a native runner (the release workflow runs amd64 on ubuntu-24.04 and
# arm64 on ubuntu-24.04-arm), so no QEMU and no cross C toolchain: TARGETARCH picks the musl
# target of the machine doing the build.

# --- builder -------------------------------------------------------------------------------
# Debian's Rust image: `musl-tools` gives musl-gcc, which ring (rustls' crypto) needs to compile
# its C and assembly for the musl target. The tag follows the toolchain the project is tested
# with; Dependabot (docker ecosystem) can pin it to a digest.
FROM rust:1.95-bookworm AS builder
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# amd64 -> x86_64-unknown-linux-musl, arm64 -> aarch64-unknown-linux-musl. Written to a file so
# later RUN steps agree on it without repeating the mapping.
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Only what the build reads (.dockerignore denies everything else): a change to docs or
# workflows does not invalidate the build.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY templates ./templates
# The workspace's other member (the example app): cargo reads its manifest, never builds it here.
COPY examples/kitchen/Cargo.toml examples/kitchen/main.rs ./examples/kitchen/
# --locked: the image is built from exactly the reviewed Cargo.lock. The cache mounts keep the
# registry and target dir between builds on the same builder; the binary is copied out of the
# cache mount because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/atlas" /atlas

# --- runtime -------------------------------------------------------------------------------
# distroless/static rather than scratch: it is still only ~2 MB, and it brings what a static
# binary needs and scratch lacks: Debian's CA bundle at /etc/ssl/certs/ca-certificates.crt (read
# by rustls-native-certs for Neon, Fly and GitHub over TLS), a world-writable /tmp (temporary
# files), /etc/passwd with root, and tzdata; Google rebuilds it when those get security fixes.
# There is no shell or package manager in it, which is also why the smoke step below uses the
# exec form.
FROM gcr.io/distroless/static-debian12
COPY --from=builder /atlas /usr/local/bin/atlas
# Smoke test at build time: the binary starts and is really static (a dynamically linked binary
# fails here, as there is no libc in this image). Exec form: no /bin/sh needed.
RUN ["/usr/local/bin/atlas", "--version"]
# No USER: GitHub runs container actions as root and mounts the workspace owned by the runner;
# a non-root user could not write GITHUB_OUTPUT or the workspace (distroless/static runs as root).
# No WORKDIR: the runner sets it (--workdir /github/workspace) and a WORKDIR here would be
# overridden or, worse, used when running the image outside Actions.
# action.yml passes `run` as the argument.
ENTRYPOINT ["/usr/local/bin/atlas"]
