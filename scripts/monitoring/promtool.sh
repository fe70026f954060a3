#!/usr/bin/env bash
# Fetches (once) Prometheus' promtool from Debian's `prometheus` package — unpacked, not installed, so no
# Prometheus server is set up or started — into $DECKHAND_CACHE_DIR (default /var/cache/deckhand), keyed by the
# package's version, and prints its path on the last line. The tests check and unit-test
# deploy/monitoring/deckhand-rules.yml with it.
set -euo pipefail
cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand}
version=$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p')
if [[ -z $version || $version == "(none)" ]]; then
  apt-get update -q >/dev/null
  version=$(apt-cache policy prometheus | sed -n 's/^ *Candidate: //p')
fi
directory=$cache/promtool-${version//[^A-Za-z0-9.+-]/_}
if [[ ! -x $directory/usr/bin/promtool ]]; then
  printf '[promtool] fetching prometheus %s from Debian (once)\n' "$version" >&2
  work=$(mktemp -d /var/tmp/deckhand-promtool.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work" # apt fetches as its own user
  (cd "$work" && apt-get download -q "prometheus=$version" >/dev/null)
  rm -rf "$directory.partial"
  mkdir -p "$directory.partial"
  dpkg-deb -x "$work"/prometheus_*.deb "$directory.partial"
  "$directory.partial/usr/bin/promtool" --version >/dev/null
  rm -rf "$directory"
  mv "$directory.partial" "$directory"
fi
echo "$directory/usr/bin/promtool"
