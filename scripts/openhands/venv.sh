#!/usr/bin/env bash
# Makes (once) a Python virtual environment with OpenHands' own classes (requirements.txt), cached outside the
# clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements, and prints its
# python's path on the last line. The contract tests parse Deckhand's events with it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand}
python=/usr/bin/python3
log() { printf '[openhands-venv] %s\n' "$*" >&2; }

if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  log "installing python3-venv"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
fi
key=$( { "$python" --version; cat "$here/requirements.txt"; echo venv-v1; } | sha256sum | cut -c1-16)
venv=$cache/openhands-0.62.0-$key
if [[ ! -f $venv/.complete ]]; then
  log "making $venv (once: about 450 MB from PyPI)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --ignore-requires-python \
    -r "$here/requirements.txt" >&2
  LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/python" -c 'import openhands.events.serialization' ||
    { log "OpenHands' classes do not import in $venv"; exit 1; }
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
