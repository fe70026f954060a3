#!/usr/bin/env bash
# Builds the Deckhand image deckhand/deckhand:<VERSION> (every role: `deckhand gateway`, `conversation-worker`,
# `runtime-worker`, `runtime-api`, `migrate`, …) without any registry:
#   1. a Debian 12 (minbase) root file system with the shared libraries deckhand loads (libcurl, librabbitmq,
#      libpq) and the CA certificates, made with debootstrap, cached outside the clone in $DECKHAND_CACHE_DIR
#      (default /var/cache/deckhand), keyed by its inputs, and made only when missing;
#   2. deckhand built in release mode with the Swift standard library linked in statically;
#   3. an image of only what deckhand (and curl, for health checks) loads from that root file system — the
#      dynamic loader's closure, no shell, no package manager — plus deckhand, its migrations (the resources
#      of DeckhandStore, beside the binary), the shipped configuration at /etc/deckhand/deckhand.conf and the
#      unprivileged user deckhand (uid 10001), imported with `docker import` (not rebuilt when nothing changed).
# Needs root (debootstrap, chroot) and a Docker engine (DOCKER_HOST, or deploy/local/services.sh's socket).
# Prints the image reference on the last line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

version=$(cat deploy/deckhand/VERSION)
image=${DECKHAND_IMAGE:-deckhand/deckhand:$version}
packages=libcurl4,librabbitmq4,libpq5,ca-certificates,curl
export DOCKER_HOST=${DOCKER_HOST:-unix://$repo/.deckhand/docker/docker.sock}
source deploy/lib/debian-rootfs.sh

log() { printf '[deckhand-image] %s\n' "$*" >&2; }

command -v strip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q binutils >/dev/null
rootfs=$(debian_rootfs deckhand-rootfs "$packages" rootfs-v1)

log "building deckhand (release, static Swift standard library)"
swift build -c release --static-swift-stdlib --product deckhand >&2
bin=$(swift build -c release --static-swift-stdlib --show-bin-path)
resources=$bin/deckhand_DeckhandStore.resources
[[ -d $resources/Migrations ]] || { log "no migrations at $resources/Migrations"; exit 1; }

# The layer's own version: bump it when what the image holds beside the binary changes.
layer=closure-v1
build=$(rootfs_digest "$rootfs")
build+=-$(sha256sum "$bin/deckhand" | cut -c1-16)
build+=-$( (find "$resources" -type f -print0 | sort -z | xargs -0 cat; cat config/deckhand.conf) | sha256sum | cut -c1-16)
build+=-$layer
current=$(image_label "$image" deckhand.image.build)
if [[ $current == "$build" ]]; then
  log "$image is up to date"
else
  log "importing $image"
  work=$(mktemp -d /var/tmp/deckhand-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir "$work/root" "$work/image"
  tar -C "$work/root" -xf "$rootfs"
  # Stripped: the symbols are most of the binary's size and nobody debugs inside the image.
  mkdir -p "$work/root/usr/local/bin"
  strip -o "$work/root/usr/local/bin/deckhand" "$bin/deckhand"
  # What the dynamic loader maps for deckhand and curl, each under its directory's real path (merged /usr:
  # /lib is a link to usr/lib), followed through links to the files themselves.
  libraries=$(for program in /usr/local/bin/deckhand /usr/bin/curl; do
    chroot "$work/root" /usr/bin/ldd "$program" | awk '/=> \//{print $3} /^\t\//{print $1}'
  done | sort -u)
  copy() { # copy <path in the root file system>: the file the path names, at its real directory's path
    local directory
    directory=$(chroot "$work/root" readlink -f "$(dirname "$1")")
    mkdir -p "$work/image$directory"
    cp -L "$work/root$1" "$work/image$directory/$(basename "$1")"
  }
  for library in $libraries; do copy "$library"; done
  copy /usr/bin/curl
  copy /usr/local/bin/deckhand
  for link in bin lib lib64 sbin; do cp -P "$work/root/$link" "$work/image/$link"; done
  mkdir -p "$work/image/etc/ssl/certs" "$work/image/etc/deckhand" "$work/image/tmp" "$work/image/home/deckhand"
  cp -L "$work/root/etc/ssl/certs/ca-certificates.crt" "$work/image/etc/ssl/certs/"
  cp "$work/root/etc/nsswitch.conf" "$work/image/etc/"
  cp -r "$resources" "$work/image/usr/local/bin/"
  cp config/deckhand.conf "$work/image/etc/deckhand/deckhand.conf"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\ndeckhand:x:10001:10001:Deckhand:/home/deckhand:/usr/sbin/nologin\n' \
    >"$work/image/etc/passwd"
  printf 'root:x:0:\ndeckhand:x:10001:\n' >"$work/image/etc/group"
  chmod 1777 "$work/image/tmp"
  chmod -R go-w "$work/image"
  # The binary starts with only these files: a quick check before anything is imported.
  chroot "$work/image" /usr/local/bin/deckhand --help >/dev/null
  tar --numeric-owner --owner=0 --group=0 -C "$work/image" -cf "$work/image.tar" --exclude=./home/deckhand .
  tar --numeric-owner --owner=10001 --group=10001 --no-recursion -C "$work/image" -rf "$work/image.tar" ./home/deckhand
  docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/deckhand"]' \
    --change 'CMD ["--help"]' \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /home/deckhand' \
    --change 'ENV DECKHAND_CONFIG=/etc/deckhand/deckhand.conf SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8' \
    --change "LABEL deckhand.image.build=$build" \
    "$work/image.tar" "$image" >/dev/null
  rm -rf "$work"
  trap - EXIT
fi
log "$image: $(($(docker image inspect --format '{{.Size}}' "$image") / 1000000)) MB"
echo "$image"
