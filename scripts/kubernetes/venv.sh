#!/usr/bin/env bash
# Makes (once) a Python virtual environment with kubernetes-validate (requirements.txt), cached outside the clone
# in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements, and prints its python's
# path on the last line. render.py validates the rendered Kubernetes manifests with it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../python-venv.sh"
make_venv kubernetes-validate-1.37.0 "$here/requirements.txt" "--no-deps" \
  'import kubernetes_validate, yaml, jsonschema'
