#!/usr/bin/env bash
# Makes (once) a Python virtual environment with Modal's own protocol classes (requirements.txt), cached outside
# the clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements, and prints its
# python's path on the last line. The fake Modal server and the golden-bytes generator run with it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../python-venv.sh"
make_venv modal-1.6.4 "$here/requirements.txt" "--no-deps" 'import modal_proto.api_grpc, grpclib.server'
