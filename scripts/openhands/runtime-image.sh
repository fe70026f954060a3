#!/usr/bin/env bash
# Builds (once) deckhand-test/openhands-runtime:<key>: OpenHands' own action-execution server (openhands-ai 0.62.0
# with every dependency pinned in runtime-requirements.txt) on Deckhand's sandbox image, for the tests that put
# it behind `deckhand runtime-api` and drive it from the conversation worker. No registry: the container that
# builds it uses the host's network for Debian's mirror (tmux, which OpenHands' shell needs) and PyPI (through
# uv), copies in a Python 3.12 of this machine (openhands-ai 0.62.0 requires 3.12; Debian 12 has 3.11; this
# machine kind has pyenv's) and is committed as the image. Keyed by the sandbox image's build, the requirements,
# the interpreter and this script's layer version; rebuilt only when one changes. Prints the image reference on
# the last line. Needs the sandbox image (deploy/sandbox/build-offline.sh) and a Docker engine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/../python-venv.sh"
export DOCKER_HOST=${DOCKER_HOST:-unix://$repo/.deckhand/docker/docker.sock}
base=${DECKHAND_SANDBOX_IMAGE:-deckhand/sandbox:$(cat "$repo/deploy/sandbox/VERSION")}
cache=${DECKHAND_CACHE_DIR:-/var/cache/deckhand}
log() { printf '[openhands-runtime] %s\n' "$*" >&2; }

python=${DECKHAND_PYTHON312:-}
if [[ -z $python ]]; then
  for candidate in /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if [[ -x $candidate ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      python=$candidate
    fi
  done
fi
[[ -n $python ]] || { log "needs a Python 3.12 (set DECKHAND_PYTHON312): openhands-ai 0.62.0 requires it"; exit 1; }
prefix=$("$python" -c 'import sys; print(sys.base_prefix)')
uv=$(dirname "$(make_venv uv "$here/uv-requirements.txt" "" 'import uv' | tail -n 1)")/uv

base_build=$(docker image inspect --format '{{index .Config.Labels "deckhand.sandbox.build"}}' "$base" 2>/dev/null) ||
  { log "the sandbox image $base is missing: run deploy/sandbox/build-offline.sh first"; exit 1; }
layer=openhands-runtime-v3
key=$( { echo "$base_build"; cat "$here/runtime-requirements.txt"; "$python" --version; echo "$prefix $layer"; } |
  sha256sum | cut -c1-16)
image=deckhand-test/openhands-runtime:$key
if docker image inspect "$image" >/dev/null 2>&1; then
  log "$image is up to date"
  echo "$image"
  exit 0
fi

log "building $image (once: about 1.3 GB from PyPI)"
name=deckhand-openhands-build-$$
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
mkdir -p "$cache/uv-cache"
# The host's certificate authorities reach PyPI from here (a proxy's among them, where there is one).
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
docker run --name "$name" --network host --user 0 --entrypoint /bin/bash \
  -v "$prefix:/mnt/python:ro" -v "$here/runtime-requirements.txt:/mnt/requirements.txt:ro" \
  -v "$uv:/mnt/uv:ro" -v "$cache/uv-cache:/mnt/uv-cache" -v "$ca:/mnt/ca.crt:ro" -e SSL_CERT_FILE=/mnt/ca.crt \
  "$base" -c "
    set -euo pipefail
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends tmux >/dev/null
    rm -rf /var/lib/apt/lists/*
    mkdir -p '$(dirname "$prefix")'
    cp -a /mnt/python '$prefix'
    '$prefix/bin/python3.12' -m venv /openhands/venv
    /mnt/uv pip install -q --cache-dir /mnt/uv-cache --python /openhands/venv/bin/python --no-deps \
      -r /mnt/requirements.txt
    /openhands/venv/bin/python -c 'import openhands.runtime.action_execution_server'
  " >&2
# The entrypoint runs the command as given (`ENTRYPOINT []` does not undo the build container's /bin/bash).
docker commit \
  --change 'ENTRYPOINT ["/usr/bin/env"]' \
  --change 'CMD ["python", "-u", "-m", "openhands.runtime.action_execution_server", "60000", "--working-dir", "/workspace", "--username", "root", "--user-id", "0", "--no-enable-browser"]' \
  --change 'ENV PATH=/openhands/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'WORKDIR /workspace' \
  --change "LABEL deckhand.openhands.build=$key" \
  "$name" "$image" >/dev/null
# Earlier builds are of no use again: they go (about 2 GB each).
docker image ls --format '{{.Repository}}:{{.Tag}}' deckhand-test/openhands-runtime | grep -vx "$image" |
  xargs -r docker image rm >/dev/null 2>&1 || true
echo "$image"
