#!/usr/bin/env bash
# The compose stack on this machine's Docker engine (deploy/compose/README.md).
#   stack.sh up      builds the images offline (cached), writes deckhand.env once (random passwords, mode 0600),
#                    starts everything and waits until the API answers through the load balancer
#   stack.sh key U   prints a new API key for user U
#   stack.sh install installs Debian's docker-compose when it is missing (every command does)
#   stack.sh ps      the services and their health
#   stack.sh down    stops and removes the services and the sandboxes they made (the volumes stay; add
#                    --volumes to remove the broker's and the database's data too)
# Other arguments after `compose` go to docker-compose as they are: stack.sh compose up -d --scale runtime-worker=2
# Variables: DECKHAND_ENV_FILE (deploy/compose/deckhand.env), COMPOSE_PROJECT_NAME (deckhand), DOCKER_HOST
# (deploy/local/services.sh's engine when it runs, else the system's), and those of docker-compose.yml.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
env_file=${DECKHAND_ENV_FILE:-$here/deckhand.env}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-deckhand}
if [[ -z ${DOCKER_HOST:-} && -S $repo/.deckhand/docker/docker.sock ]]; then
  export DOCKER_HOST=unix://$repo/.deckhand/docker/docker.sock
fi
socket=${DOCKER_HOST:-}
socket=${socket#unix://}
[[ $socket == "${DOCKER_HOST:-}" || -z $socket ]] && socket=/var/run/docker.sock
export DECKHAND_DOCKER_SOCKET=$socket
DOCKER_GID=$(stat -c %g "$socket")
export DOCKER_GID

log() { printf '[compose] %s\n' "$*" >&2; }

command -v docker-compose >/dev/null || {
  log "installing docker-compose (Debian's)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null
}

compose() { docker-compose -f "$here/docker-compose.yml" --env-file "$env_file" "$@"; }

ensure_env_file() {
  [[ -f $env_file ]] && return
  log "writing $env_file (fresh passwords; edit it to set the model and its key)"
  umask 077
  sed -e "s/^RABBITMQ_PASSWORD=.*/RABBITMQ_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')/" \
    -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')/" \
    "$here/deckhand.env.example" >"$env_file"
}

build_images() {
  DECKHAND_SANDBOX_IMAGE=$("$repo/deploy/sandbox/build-offline.sh" | tail -n 1)
  DECKHAND_IMAGE=$("$repo/deploy/deckhand/build-offline.sh" | tail -n 1)
  "$here/images/build-offline.sh" >/dev/null
  export DECKHAND_SANDBOX_IMAGE DECKHAND_IMAGE
}

# The port the load balancer publishes, as docker-compose will read it.
api_port() {
  local port=${DECKHAND_COMPOSE_PORT:-}
  [[ -z $port ]] && port=$(sed -n 's/^DECKHAND_COMPOSE_PORT=//p' "$env_file")
  echo "${port:-3000}"
}

case ${1:-} in
  install)
    # docker-compose is installed above when missing; nothing else to do.
    ;;
  up)
    shift
    ensure_env_file
    [[ ${DECKHAND_SKIP_BUILD:-} == 1 ]] || build_images
    started=$(date +%s.%N)
    compose up -d --remove-orphans "$@" >&2
    port=$(api_port)
    for _ in $(seq 1 240); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
        log "up: the API answers at http://127.0.0.1:$port ($(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
        exit 0
      fi
      sleep 0.5
    done
    compose ps >&2
    compose logs --tail 30 >&2
    log "the API did not answer at http://127.0.0.1:$port within 120 s"
    exit 1
    ;;
  key)
    [[ -n ${2:-} ]] || { log "usage: stack.sh key USER"; exit 2; }
    compose run --rm --no-deps -T migrate keys create --user "$2" | tail -n 1
    ;;
  ps)
    compose ps
    ;;
  down)
    shift
    compose down --remove-orphans "$@" >&2
    # The runtime workers' sandboxes are containers of the same engine that compose did not make.
    namespace=${DECKHAND_NAMESPACE:-default}
    sandboxes=$(docker ps -aq --filter label=deckhand.managed=true --filter "label=deckhand.deployment=$namespace")
    if [[ -n $sandboxes ]]; then
      log "removing $(wc -w <<<"$sandboxes") sandbox containers of deployment $namespace"
      docker rm -f -v $sandboxes >/dev/null
    fi
    network=${DECKHAND_SANDBOX_NETWORK:-deckhand-compose-sandboxes}
    docker network rm "$network" >/dev/null 2>&1 || true
    ;;
  compose)
    shift
    ensure_env_file
    compose "$@"
    ;;
  *)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
