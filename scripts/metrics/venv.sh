#!/usr/bin/env bash
# Makes (once) a Python virtual environment with Prometheus' Python client (requirements.txt), cached outside
# the clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements, and prints its
# python's path on the last line. The tests read every /metrics with its parser (check.py).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../python-venv.sh"
make_venv prometheus-client-0.21.1 "$here/requirements.txt" "--no-deps" \
  'import prometheus_client.parser'
