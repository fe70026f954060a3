#!/usr/bin/env bash
# Makes (once) a Python virtual environment with OpenHands' own classes (requirements.txt), cached outside the
# clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements, and prints its
# python's path on the last line. The contract tests parse Deckhand's events with it (about 450 MB).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../python-venv.sh"
export LITELLM_LOCAL_MODEL_COST_MAP=True
make_venv openhands-0.62.0 "$here/requirements.txt" "--no-deps --ignore-requires-python" \
  'import openhands.events.serialization'
