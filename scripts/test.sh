#!/usr/bin/env bash
# Runs every test: starts the local services (installing what is missing), builds with warnings as errors,
# then runs the unit and integration tests against the real RabbitMQ, PostgreSQL and dockerd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deploy/local/services.sh start
eval "$(deploy/local/services.sh env)"

swift build --build-tests -Xswiftc -warnings-as-errors
swift test --skip-build "$@"
