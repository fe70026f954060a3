# Sourced by the scripts that make a cached Python virtual environment (scripts/openhands, scripts/openapi).
# make_venv NAME REQUIREMENTS PIP_FLAGS CHECK: makes (once) $DECKHAND_CACHE_DIR/NAME-<key> (default cache
# /var/cache/deckhand), keyed by the interpreter's version, the requirements and the flags, installs the
# requirements with pip, runs CHECK with the venv's python, and prints that python's path on the last line.
# A venv that did not finish (no .complete) is made again.

make_venv() {
  local name=$1 requirements=$2 flags=$3 check=$4
  local cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand} python=/usr/bin/python3
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    printf '[%s] installing python3-venv\n' "$name" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
  fi
  local key venv
  key=$( { "$python" --version; cat "$requirements"; echo "$flags venv-v1"; } | sha256sum | cut -c1-16)
  venv=$cache/$name-$key
  if [[ ! -f $venv/.complete ]]; then
    printf '[%s] making %s (once, from PyPI)\n' "$name" "$venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086 # the flags are words
    "$venv/bin/pip" install -q --disable-pip-version-check $flags -r "$requirements" >&2
    "$venv/bin/python" -c "$check" || { printf '[%s] the check failed in %s\n' "$name" "$venv" >&2; return 1; }
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}
