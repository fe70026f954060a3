#!/usr/bin/env bash
# Builds the compose stack's service images without any registry, from Debian 12's own packages:
# deckhand/rabbitmq, deckhand/postgres and deckhand/haproxy (tags: deploy/compose/images/VERSION). One root
# file system holds all three (rabbitmq-server, postgresql-15, haproxy), made with debootstrap and apt, cached
# outside the clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand), keyed by its inputs and made only
# when missing; the three images are one layer (stored once) with their own entrypoint and user.
# Where a registry is reachable, rabbitmq:3-management, postgres:15 and haproxy:2.6 do the same job (their
# variables differ: see deploy/compose/README.md). Needs root and a Docker engine. Prints the three image
# references, one per line, last.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$repo"

version=$(cat deploy/compose/images/VERSION)
cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand}
mirror=${DECKHAND_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages="rabbitmq-server postgresql-15 haproxy"
export DOCKER_HOST=${DOCKER_HOST:-unix://$repo/.deckhand/docker/docker.sock}

log() { printf '[compose-images] %s\n' "$*" >&2; }

command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
}

key=$(printf '%s\n' "$suite" "$packages" "$mirror" "services-rootfs-v1" | sha256sum | cut -c1-16)
rootfs=$cache/services-rootfs-$key.tar
mkdir -p "$cache"
if [[ ! -f $rootfs ]]; then
  log "building the root file system (Debian $suite: $packages) into $rootfs"
  tmp=$(mktemp -d /var/tmp/deckhand-rootfs.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  debootstrap --variant=minbase "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
  # No service starts inside the chroot while its package is installed.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/root/usr/sbin/policy-rc.d"
  chmod +x "$tmp/root/usr/sbin/policy-rc.d"
  chroot "$tmp/root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $packages >"$tmp/apt.log" 2>&1 ||
    { tail -20 "$tmp/apt.log" >&2; exit 1; }
  rm -f "$tmp/root/usr/sbin/policy-rc.d"
  # Whatever the packages started anyway (Erlang's epmd) lives in the chroot: ended before it is packed.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$tmp/root" ]] && kill -9 "$pid" 2>/dev/null || true
  done
  # The package's default cluster is not used: the entrypoint makes one in the data volume.
  rm -rf "$tmp/root/var/lib/postgresql/15" "$tmp/root/etc/postgresql/15/main"
  mkdir -p "$tmp/root/var/lib/postgresql/data"
  chroot "$tmp/root" chown postgres:postgres /var/lib/postgresql/data
  chmod 0700 "$tmp/root/var/lib/postgresql/data"
  rm -rf "$tmp/root/var/lib/apt/lists/"* "$tmp/root/var/cache/apt/"* "$tmp/root/usr/share/doc/"* \
    "$tmp/root/usr/share/man/"* "$tmp/root/usr/share/info/"*
  tar --numeric-owner -C "$tmp/root" -cf "$rootfs.partial" .
  mv "$rootfs.partial" "$rootfs"
  rm -rf "$tmp"
  trap - EXIT
fi

layer=entrypoints-v1
build=$( (cat "$rootfs.sha256" 2>/dev/null || sha256sum "$rootfs" | tee "$rootfs.sha256") | cut -c1-16)
build+=-$(cat deploy/compose/images/*-entrypoint.sh | sha256sum | cut -c1-16)-$layer
work=
for name in rabbitmq postgres haproxy; do
  image=deckhand/$name:$version
  current=$(docker image inspect --format '{{index .Config.Labels "deckhand.image.build"}}' "$image" 2>/dev/null || true)
  if [[ $current == "$build" ]]; then
    log "$image is up to date"
    continue
  fi
  if [[ -z $work ]]; then
    work=$(mktemp -d /var/tmp/deckhand-image.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    cp "$rootfs" "$work/image.tar"
    mkdir -p "$work/add/usr/local/bin"
    cp deploy/compose/images/postgres-entrypoint.sh deploy/compose/images/rabbitmq-entrypoint.sh "$work/add/usr/local/bin/"
    chmod 0755 "$work/add/usr/local/bin/"*
    tar --numeric-owner --owner=0 --group=0 -C "$work/add" -rf "$work/image.tar" \
      ./usr/local/bin/postgres-entrypoint.sh ./usr/local/bin/rabbitmq-entrypoint.sh
  fi
  case $name in
    rabbitmq)
      changes=(--change 'USER rabbitmq' --change 'ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint.sh"]'
        --change 'ENV HOME=/var/lib/rabbitmq RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/mnesia RABBITMQ_LOG_BASE=/var/log/rabbitmq LANG=C.UTF-8'
        --change 'EXPOSE 5672' --change 'VOLUME /var/lib/rabbitmq') ;;
    postgres)
      changes=(--change 'USER postgres' --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]'
        --change 'ENV LANG=C.UTF-8 PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin'
        --change 'EXPOSE 5432' --change 'VOLUME /var/lib/postgresql/data') ;;
    haproxy)
      changes=(--change 'USER haproxy' --change 'ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db"]'
        --change 'CMD ["-f", "/etc/haproxy/haproxy.cfg"]' --change 'ENV LANG=C.UTF-8') ;;
  esac
  log "importing $image"
  docker import "${changes[@]}" --change "LABEL deckhand.image.build=$build" "$work/image.tar" "$image" >/dev/null
done
[[ -n $work ]] && rm -rf "$work"
trap - EXIT
for name in rabbitmq postgres haproxy; do echo "deckhand/$name:$version"; done
