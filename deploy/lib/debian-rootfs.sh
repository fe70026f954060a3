# Sourced by the offline image builders (deploy/sandbox, deploy/deckhand, deploy/compose/images).
#
# debian_rootfs NAME INCLUDE TAG [CUSTOMIZE]: prints the path of a Debian 12 (minbase) root file system packed as
# a tar, $DECKHAND_CACHE_DIR/NAME-<key>.tar (default cache /var/cache/deckhand; mirror $DECKHAND_DEBIAN_MIRROR),
# keyed by the suite, INCLUDE (debootstrap's --include: comma-separated packages), the mirror and TAG (bump it
# when CUSTOMIZE changes), and made only when missing: debootstrap, then the function CUSTOMIZE, if named, given
# the root's path. Needs root.
#
# rootfs_digest ROOTFS: the first 16 hex digits of the tar's SHA-256, kept beside it (ROOTFS.sha256) once computed.
#
# image_label IMAGE LABEL: the label LABEL of IMAGE (what it was built from); empty when it has none.

debian_rootfs() {
  local name=$1 include=$2 tag=$3 customize=${4:-}
  local cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand} mirror=${DECKHAND_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local suite=bookworm key rootfs tmp
  command -v debootstrap >/dev/null || {
    printf '[%s] installing debootstrap\n' "$name" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  }
  key=$(printf '%s\n' "$suite" "$include" "$mirror" "$tag" | sha256sum | cut -c1-16)
  rootfs=$cache/$name-$key.tar
  mkdir -p "$cache"
  if [[ ! -f $rootfs ]]; then
    printf '[%s] building the root file system (Debian %s minbase: %s) into %s\n' \
      "$name" "$suite" "${include:-nothing more}" "$rootfs" >&2
    tmp=$(mktemp -d /var/tmp/deckhand-rootfs.XXXXXX)
    if ! debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$tmp/root" "$mirror" \
      >"$tmp/debootstrap.log" 2>&1; then
      tail -20 "$tmp/debootstrap.log" >&2
      rm -rf "$tmp"
      return 1
    fi
    if [[ -n $customize ]] && ! "$customize" "$tmp/root"; then
      printf '[%s] %s failed\n' "$name" "$customize" >&2
      rm -rf "$tmp"
      return 1
    fi
    tar --numeric-owner -C "$tmp/root" -cf "$rootfs.partial" .
    mv "$rootfs.partial" "$rootfs"
    rm -rf "$tmp"
  fi
  echo "$rootfs"
}

image_label() {
  docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

rootfs_digest() {
  { cat "$1.sha256" 2>/dev/null || sha256sum "$1" | tee "$1.sha256"; } | cut -c1-16
}
