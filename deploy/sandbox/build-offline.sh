#!/usr/bin/env bash
# Builds the sandbox image deckhand/sandbox:<VERSION> without any registry:
#   1. a Debian 12 (minbase) root file system made with debootstrap from the Debian mirror, cached outside
#      the clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand), keyed by its inputs, and made only
#      when missing;
#   2. deckhand-sandbox built in release mode with the Swift standard library linked in statically;
#   3. both imported as one image with `docker import` (the image is not rebuilt when neither changed).
# Needs root (debootstrap) and a Docker engine (DOCKER_HOST, or deploy/local/services.sh's socket).
# Prints the image reference on the last line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

version=$(cat deploy/sandbox/VERSION)
image=${DECKHAND_SANDBOX_IMAGE:-deckhand/sandbox:$version}
# What the agent's shell needs, and libcurl for deckhand-sandbox itself (its only dynamic dependency
# beyond glibc).
packages=bash,coreutils,findutils,grep,sed,gawk,diffutils,patch,less,procps,git,python3,curl,ca-certificates,libcurl4,zip,unzip
export DOCKER_HOST=${DOCKER_HOST:-unix://$repo/.deckhand/docker/docker.sock}
source deploy/lib/debian-rootfs.sh

log() { printf '[sandbox-image] %s\n' "$*" >&2; }

command -v strip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q binutils >/dev/null

# Smaller and reproducible: no package lists, caches, docs or man pages; the workspace's mount point.
slim() {
  rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"* "$1/usr/share/doc/"* "$1/usr/share/man/"* "$1/usr/share/info/"*
  mkdir -p "$1/workspace"
}
rootfs=$(debian_rootfs sandbox-rootfs "$packages" rootfs-v1 slim)

log "building deckhand-sandbox (release, static Swift standard library)"
swift build -c release --static-swift-stdlib --product deckhand-sandbox >&2
binary=$(swift build -c release --static-swift-stdlib --show-bin-path)/deckhand-sandbox

# The layer's own version: bump it when what is added on top of the root file system changes.
layer=user-v1
build=$(rootfs_digest "$rootfs")-$(sha256sum "$binary" | cut -c1-16)-$layer
current=$(image_label "$image" deckhand.sandbox.build)
if [[ $current == "$build" ]]; then
  log "$image is up to date"
else
  log "importing $image"
  work=$(mktemp -d /var/tmp/deckhand-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  cp "$rootfs" "$work/image.tar"
  mkdir -p "$work/add/usr/local/bin"
  # Stripped: the symbols are most of the binary's size and the sandbox has no debugger.
  strip -o "$work/add/usr/local/bin/deckhand-sandbox" "$binary"
  chmod 0755 "$work/add/usr/local/bin/deckhand-sandbox"
  tar --numeric-owner --owner=0 --group=0 -C "$work/add" -rf "$work/image.tar" ./usr/local/bin/deckhand-sandbox
  # The unprivileged user the server drops to (uid 1000, as docker.user = sandbox expects), owner of the
  # workspace and of its home (both mount points: the root file system is read-only at run time).
  tar -C "$work/add" -xf "$rootfs" ./etc/passwd ./etc/group ./etc/shadow
  grep -q '^sandbox:' "$work/add/etc/passwd" || {
    echo 'sandbox:x:1000:1000:Deckhand sandbox:/home/sandbox:/bin/bash' >>"$work/add/etc/passwd"
    echo 'sandbox:x:1000:' >>"$work/add/etc/group"
    echo 'sandbox:!:19000:0:99999:7:::' >>"$work/add/etc/shadow"
  }
  mkdir -p "$work/add/home/sandbox" "$work/add/workspace"
  # docker import refuses an archive that names a path twice: the root file system's copies go first.
  tar --delete -f "$work/image.tar" ./etc/passwd ./etc/group ./etc/shadow ./workspace
  tar --numeric-owner --owner=0 --group=0 -C "$work/add" -rf "$work/image.tar" ./etc/passwd ./etc/group
  tar --numeric-owner --owner=0 --group=42 --mode=0640 -C "$work/add" -rf "$work/image.tar" ./etc/shadow
  tar --numeric-owner --owner=1000 --group=1000 --mode=0750 --no-recursion -C "$work/add" -rf "$work/image.tar" \
    ./home/sandbox ./workspace
  docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/deckhand-sandbox"]' \
    --change 'CMD ["--host", "0.0.0.0", "--port", "8000", "--working-dir", "/workspace"]' \
    --change 'WORKDIR /workspace' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change "LABEL deckhand.sandbox.build=$build" \
    "$work/image.tar" "$image" >/dev/null
  rm -rf "$work"
  trap - EXIT
fi
echo "$image"
