#!/usr/bin/env bash
# Makes (once) a Python virtual environment with Schemathesis (requirements.txt: every package pinned),
# cached outside the clone in $DECKHAND_CACHE_DIR (default /var/cache/deckhand) and keyed by the requirements,
# and prints the path of its `schemathesis` command on the last line. The fuzz test runs it against the
# gateway's own /openapi.json (OpenAPIFuzzTests).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../python-venv.sh"
python=$(make_venv schemathesis-4.32.5 "$here/requirements.txt" "--no-deps" 'import schemathesis' | tail -n 1)
echo "$(dirname "$python")/schemathesis"
