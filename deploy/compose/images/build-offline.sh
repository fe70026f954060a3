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
packages="rabbitmq-server postgresql-15 haproxy"
export DOCKER_HOST=${DOCKER_HOST:-unix://$repo/.deckhand/docker/docker.sock}
source deploy/lib/debian-rootfs.sh

log() { printf '[compose-images] %s\n' "$*" >&2; }

# The packages installed with apt after debootstrap, with no service started inside the chroot meanwhile.
install_services() {
  local root=$1 pid
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  # shellcheck disable=SC2086 # the packages are words
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $packages >"$root.apt.log" 2>&1 || { tail -20 "$root.apt.log" >&2; return 1; }
  rm -f "$root/usr/sbin/policy-rc.d" "$root.apt.log"
  # Whatever the packages started anyway (Erlang's epmd) lives in the chroot: ended before it is packed.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$root" ]] && kill -9 "$pid" 2>/dev/null || true
  done
  # The package's default cluster is not used: the entrypoint makes one in the data volume.
  rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15/main"
  mkdir -p "$root/var/lib/postgresql/data"
  chroot "$root" chown postgres:postgres /var/lib/postgresql/data
  chmod 0700 "$root/var/lib/postgresql/data"
  rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"* "$root/usr/share/doc/"* "$root/usr/share/man/"* \
    "$root/usr/share/info/"*
}
rootfs=$(debian_rootfs services-rootfs "" "services-v2: $packages" install_services)

layer=entrypoints-v1
build=$(rootfs_digest "$rootfs")
build+=-$(cat deploy/compose/images/*-entrypoint.sh | sha256sum | cut -c1-16)-$layer
work=
for name in rabbitmq postgres haproxy; do
  image=deckhand/$name:$version
  current=$(image_label "$image" deckhand.image.build)
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
