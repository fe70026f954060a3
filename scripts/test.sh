#!/usr/bin/env bash
# Runs every test: checks the formatting, starts the local services (installing what is missing), builds the
# sandbox image and OpenHands' parsers, builds with warnings as errors, then runs the unit and integration
# tests against the real RabbitMQ, PostgreSQL and dockerd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The code reads one way: the project's .swift-format, strictly (it fails in seconds, before anything else).
swift format lint --strict --recursive Sources Tests bench Package.swift

deploy/local/services.sh start
eval "$(deploy/local/services.sh env)"
export DOCKER_HOST=unix://$DECKHAND_DOCKER_SOCKET

# The sandbox image for the test that runs it under dockerd: its root file system is cached outside the
# clone (/var/cache/deckhand) and the image is re-imported only when the binary changed.
DECKHAND_SANDBOX_IMAGE=$(deploy/sandbox/build-offline.sh | tail -n 1)
export DECKHAND_SANDBOX_IMAGE
# The images of the compose stack (ComposeStackTests): Deckhand's own (a release build of deckhand on a root file
# system cached the same way) and RabbitMQ, PostgreSQL and HAProxy from Debian's packages (one cached root file
# system); docker-compose itself is installed by deploy/compose/stack.sh when missing.
DECKHAND_IMAGE=$(deploy/deckhand/build-offline.sh | tail -n 1)
export DECKHAND_IMAGE
{ read -r DECKHAND_RABBITMQ_IMAGE; read -r DECKHAND_POSTGRES_IMAGE; read -r DECKHAND_HAPROXY_IMAGE; } \
  < <(deploy/compose/images/build-offline.sh | tail -n 3)
export DECKHAND_RABBITMQ_IMAGE DECKHAND_POSTGRES_IMAGE DECKHAND_HAPROXY_IMAGE
deploy/compose/stack.sh install

# OpenHands' own classes, which the contract tests parse Deckhand's events with: a virtual environment cached
# outside the clone, made only when missing.
DECKHAND_OPENHANDS_PYTHON=$(scripts/openhands/venv.sh | tail -n 1)
export DECKHAND_OPENHANDS_PYTHON
# OpenHands' own action-execution server in an image (on the sandbox image, built once and kept in dockerd),
# which OpenHandsServerTests put behind `deckhand runtime-api`.
DECKHAND_OPENHANDS_RUNTIME_IMAGE=$(scripts/openhands/runtime-image.sh | tail -n 1)
export DECKHAND_OPENHANDS_RUNTIME_IMAGE
# Modal's own protocol classes (modal_proto) for the fake Modal server the `modal` backend is tested against
# (ModalBackendTests): cached the same way.
DECKHAND_MODAL_PYTHON=$(scripts/modal/venv.sh | tail -n 1)
export DECKHAND_MODAL_PYTHON
# Prometheus' own parser, which the tests read every /metrics with (RoleEndpointTests): cached the same way.
DECKHAND_METRICS_PYTHON=$(scripts/metrics/venv.sh | tail -n 1)
export DECKHAND_METRICS_PYTHON
# kubernetes-validate (the Kubernetes API's schemas), which KubernetesManifestTests validate deploy/kubernetes
# with after kustomize (kubectl's) renders it: cached the same way.
DECKHAND_KUBERNETES_PYTHON=$(scripts/kubernetes/venv.sh | tail -n 1)
export DECKHAND_KUBERNETES_PYTHON
# Prometheus' promtool (unpacked from Debian's package, no server), which MonitoringTests check and unit-test the
# alert rules and the dashboard's queries with: cached the same way.
DECKHAND_PROMTOOL=$(scripts/monitoring/promtool.sh | tail -n 1)
export DECKHAND_PROMTOOL
# Schemathesis, which fuzzes the gateway from its own /openapi.json (OpenAPIFuzzTests): cached the same way.
DECKHAND_SCHEMATHESIS=$(scripts/openapi/venv.sh | tail -n 1)
export DECKHAND_SCHEMATHESIS

# The manifest is exact: a target that imports a module it does not declare fails the build (SwiftPM checks
# only that direction; scripts/check-imports.sh checks the other).
scripts/check-imports.sh
swift build --build-tests -Xswiftc -warnings-as-errors --explicit-target-dependency-import-check error
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
else
  # The runtime and conversation suites start sandbox processes and containers in bursts that load this
  # machine for seconds: they run after the rest (whose soft timeouts and deadlines they would distort),
  # and the load, kill and outage suites each run alone after them (CI once saw a gateway test's stream limit
  # go wrong beside the minute-long PostgreSQL outage, whose retries load the whole process).
  swift test --skip-build \
    --skip 'IntegrationTests\.(Runtime|Conversation|Gateway|Modal|RoleEndpoint|BrokerAlarm|ClusterDrill|OpenHandsServer|ComposeStack)'
  swift test --skip-build --filter 'IntegrationTests\.(Runtime|Conversation|Gateway|Modal|RoleEndpoint)' \
    --skip 'RuntimeLoadTests|ConversationKillTests|ConversationOutageTests'
  swift test --skip-build --filter RuntimeLoadTests
  swift test --skip-build --filter ConversationKillTests
  swift test --skip-build --filter ConversationOutageTests
  # OpenHands' own server imports for half a minute at full speed: alone.
  swift test --skip-build --filter OpenHandsServerTests
  # A broker resource alarm blocks every publishing connection of the broker: nothing may run beside it.
  swift test --skip-build --filter BrokerAlarmTests
  # The compose stack (two gateways, the workers, RabbitMQ and PostgreSQL in containers) loads both cores: alone.
  swift test --skip-build --filter ComposeStackTests
  # The cluster drills build a cluster of their own (deploy/cluster.sh: three brokers, two databases, three
  # nodes) and kill, stop and cut parts of it under load: last, alone.
  swift test --skip-build --filter ClusterDrillTests
fi
