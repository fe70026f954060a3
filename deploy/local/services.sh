#!/usr/bin/env bash
# Local services for Deckhand: RabbitMQ, PostgreSQL and dockerd as plain processes, state in a
# git-ignored folder, listening on loopback only. Sandboxes share this machine's loopback (process
# sandboxes its network), so both services demand credentials that only the platform holds: a password for
# the PostgreSQL role `deckhand` (SCRAM, not a superuser, owner of the database `deckhand`) and for the
# RabbitMQ user `deckhand` (`guest` is removed), generated once into $DECKHAND_STATE_DIR/credentials/.
#
#   deploy/local/services.sh start     install what is missing, start what is not running, wait, print URLs
#   deploy/local/services.sh stop      stop only the processes this script started
#   deploy/local/services.sh status    say what runs
#   deploy/local/services.sh env       print the URLs (with the generated credentials) as shell exports
#   deploy/local/services.sh rabbitmqctl ARGS...   run rabbitmqctl against the local broker
#
# Environment (all optional):
#   DECKHAND_STATE_DIR   where state lives (default: <repo>/.deckhand)
#   DECKHAND_SERVICES    which services to run (default: "rabbitmq postgres docker")
#   DECKHAND_AMQP_PORT   RabbitMQ port (default 5672)
#   DECKHAND_PG_PORT     PostgreSQL port (default 5432)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${DECKHAND_STATE_DIR:-$repo/.deckhand}
services=${DECKHAND_SERVICES:-rabbitmq postgres docker}
amqp_port=${DECKHAND_AMQP_PORT:-5672}
pg_port=${DECKHAND_PG_PORT:-5432}
pg_bin=/usr/lib/postgresql/15/bin
rabbit_bin=/usr/lib/rabbitmq/bin
rabbit_node=deckhand-$amqp_port@localhost

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

wants() { [[ " $services " == *" $1 "* ]]; }

# ---------------------------------------------------------------- packages
install_packages() {
  local missing=()
  local pkgs=(pkgconf librabbitmq-dev libcurl4-openssl-dev libpq-dev postgresql-15 rabbitmq-server docker.io zip unzip nghttp2-server curl debootstrap binutils bubblewrap util-linux iproute2 iptables)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root or install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # The packages' own init scripts must not start system-wide daemons: we run our own.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # An if, not `((created_policy)) && rm`: that line's status would be the function's, and set -e would
    # end the script (silently) whenever the policy file was already there.
    if ((created_policy)); then rm -f "$policy"; fi
  fi
}

# ---------------------------------------------------------------- helpers
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # name seconds command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$name did not become ready in ${secs}s (logs in $state/$name)"
    sleep 0.3
  done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- credentials
# One secret per service, made once from the system's random source and kept (0600) in the state folder.
secret() { # name
  local dir=$state/credentials file=$state/credentials/$1
  if [[ ! -s $file ]]; then
    mkdir -p "$dir"; chmod 700 "$dir"
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
  fi
  cat "$file"
}

# ---------------------------------------------------------------- RabbitMQ
rabbit_env() {
  export HOME=$state/rabbitmq
  export RABBITMQ_NODENAME=$rabbit_node
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$amqp_port
  export RABBITMQ_DIST_PORT=$((amqp_port + 20000))
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$state/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=$state/rabbitmq/log
  export RABBITMQ_FEATURE_FLAGS_FILE=$state/rabbitmq/feature_flags
  export RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbitmq/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$state/rabbitmq/rabbitmq
  export RABBITMQ_PID_FILE=$state/rabbitmq/pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

rabbitmqctl() { (rabbit_env; "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" "$@"); }

start_rabbitmq() {
  rabbit_env
  if pid_alive "$state/rabbitmq/pid"; then log "rabbitmq already running"; secure_rabbitmq; return; fi
  port_busy "$amqp_port" && die "port $amqp_port is taken by another process; set DECKHAND_AMQP_PORT"
  mkdir -p "$state/rabbitmq/log" "$state/rabbitmq/mnesia"
  [[ -f $state/rabbitmq/enabled_plugins ]] || echo '[].' >"$state/rabbitmq/enabled_plugins"
  # A new node starts with the user deckhand and no guest; an older one is brought in line below.
  cat >"$state/rabbitmq/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$amqp_port
default_user = deckhand
default_pass = $(secret rabbitmq-password)
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
CONF
  chmod 600 "$state/rabbitmq/rabbitmq.conf"
  log "starting rabbitmq on 127.0.0.1:$amqp_port"
  setsid "$rabbit_bin/rabbitmq-server" >"$state/rabbitmq/log/stdout.log" 2>&1 </dev/null &
  echo $! >"$state/rabbitmq/pid"
  wait_for rabbitmq 90 "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" await_startup --timeout 2
  secure_rabbitmq
}

# The user deckhand with the generated password, and no guest (a node made before credentials existed).
secure_rabbitmq() {
  local users; users=$("$rabbit_bin/rabbitmqctl" -n "$rabbit_node" list_users -q --no-table-headers 2>/dev/null | awk '{print $1}')
  if ! grep -qx deckhand <<<"$users"; then
    "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" add_user deckhand "$(secret rabbitmq-password)" >/dev/null
    "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" set_permissions -p / deckhand '.*' '.*' '.*' >/dev/null
  fi
  if grep -qx guest <<<"$users"; then
    log "removing the rabbitmq user guest"
    "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" delete_user guest >/dev/null
  fi
}

stop_rabbitmq() {
  rabbit_env
  pid_alive "$state/rabbitmq/pid" || { rm -f "$state/rabbitmq/pid"; return 0; }
  log "stopping rabbitmq"
  "$rabbit_bin/rabbitmqctl" -n "$rabbit_node" shutdown >/dev/null 2>&1 || kill "$(cat "$state/rabbitmq/pid")" 2>/dev/null || true
  rm -f "$state/rabbitmq/pid"
}

# ---------------------------------------------------------------- PostgreSQL
pg() { (cd / && runuser -u postgres -- "$@"); }

# PostgreSQL refuses to run as root, and the postgres user must be able to reach its data folder. When the
# repository sits somewhere it cannot reach (under /root, say), the data lives in /var/tmp instead and
# .deckhand/postgres is a link to it.
pg_home() {
  local dir=$state/postgres
  if [[ -L $dir ]]; then readlink "$dir"; return; fi
  if [[ -d $dir ]] || (cd / && runuser -u postgres -- test -x "$state"); then echo "$dir"; return; fi
  local outside
  outside=/var/tmp/deckhand-postgres-$(printf '%s' "$state" | md5sum | cut -c1-12)
  mkdir -p "$outside"
  ln -sfn "$outside" "$dir"
  echo "$outside"
}

start_postgres() {
  chmod o+x "$state"  # postgres (not root) must be able to reach its folder
  local home; home=$(pg_home)
  local data=$home/data
  local running=0
  if [[ -f $data/postmaster.pid ]] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null; then
    running=1
  else
    port_busy "$pg_port" && die "port $pg_port is taken by another process; set DECKHAND_PG_PORT"
  fi
  mkdir -p "$home"
  chown postgres: "$home"
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initdb $data"
    pg "$pg_bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >"$home/initdb.log"
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
max_connections = 300
fsync = on
shared_buffers = 256MB
CONF
  fi
  # Over TCP every role needs its SCRAM password; the superuser postgres only logs in as the OS user
  # postgres through the socket in the data folder (this script's own administration). Rewritten at every
  # start, so a cluster made with trust before is brought in line.
  cat >"$data/pg_hba.conf" <<HBA
local all postgres peer
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
HBA
  cat >"$data/deckhand.conf" <<CONF
unix_socket_directories = '$data'
unix_socket_permissions = 0700
password_encryption = scram-sha-256
CONF
  grep -q "^include_if_exists = 'deckhand.conf'" "$data/postgresql.conf" ||
    echo "include_if_exists = 'deckhand.conf'" >>"$data/postgresql.conf"
  chown postgres: "$data/pg_hba.conf" "$data/deckhand.conf"
  if ((running)) && [[ -S $data/.s.PGSQL.$pg_port ]]; then
    log "postgres already running"
    pg "$pg_bin/pg_ctl" -D "$data" reload >/dev/null
  elif ((running)); then
    log "restarting postgres to apply its authentication settings"
    pg "$pg_bin/pg_ctl" -D "$data" -l "$home/server.log" -m fast -w -t 60 restart >/dev/null
  else
    log "starting postgres on 127.0.0.1:$pg_port"
    pg "$pg_bin/pg_ctl" -D "$data" -l "$home/server.log" -w -t 60 start >/dev/null
    touch "$home/started-by-us"
  fi
  wait_for postgres 60 "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port"
  # The role deckhand: a password, no superuser (so no COPY … TO PROGRAM, no reading other roles' data),
  # owner of its own database only. ALTER on every start brings an older superuser role in line.
  local password; password=$(secret postgres-password)
  pg "$pg_bin/psql" -h "$data" -p "$pg_port" -d postgres -qAt -v ON_ERROR_STOP=1 -v pw="$password" >/dev/null <<'SQL'
SELECT format('CREATE ROLE deckhand LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deckhand')
\gexec
SELECT format('ALTER ROLE deckhand LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'pw')
\gexec
SQL
  pg "$pg_bin/psql" -h "$data" -p "$pg_port" -d postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'deckhand'" | grep -q 1 ||
    pg "$pg_bin/createdb" -h "$data" -p "$pg_port" -O deckhand deckhand
  pg "$pg_bin/psql" -h "$data" -p "$pg_port" -d deckhand -qAt -c "REVOKE ALL ON DATABASE deckhand FROM PUBLIC; ALTER SCHEMA public OWNER TO deckhand" >/dev/null
}

stop_postgres() {
  [[ -e $state/postgres ]] || return 0
  local home; home=$(pg_home)
  local data=$home/data
  [[ -f $home/started-by-us && -f $data/postmaster.pid ]] || return 0
  log "stopping postgres"
  pg "$pg_bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  rm -f "$home/started-by-us"
}

# ---------------------------------------------------------------- dockerd
docker_sock=$state/docker/docker.sock

# A dockerd that stops (or is killed with the session that ran it) leaves its networks' bridges behind. One of
# another state folder on the same 198.18.0.0/15 subnet would win the route over the new dockerd's own, and
# its sandboxes' published ports would lead nowhere: remove such bridges while no container is on them —
# or, when no dockerd runs at all, whatever is still attached (the ends of containers killed with their
# dockerd, whose network namespaces outlived it).
remove_stale_bridges() {
  local link orphaned=false
  pgrep -x dockerd >/dev/null || orphaned=true
  for link in $(ip -o -4 addr show 2>/dev/null | awk '$2 ~ /^br-/ && $4 ~ /^198\.1[89]\./ { print $2 }' | sort -u); do
    $orphaned || [[ -z $(ip -o link show master "$link" 2>/dev/null) ]] || continue
    log "removing the stale sandbox bridge $link"
    ip link delete "$link" 2>/dev/null || true
  done
}

start_docker() {
  if pid_alive "$state/docker/pid"; then log "dockerd already running"; return; fi
  remove_stale_bridges
  mkdir -p "$state/docker"
  log "starting dockerd on unix://$docker_sock"
  setsid dockerd --iptables=false --ip6tables=false --bridge=none \
    --host "unix://$docker_sock" --data-root "$state/docker/root" --exec-root "$state/docker/exec" \
    --pidfile "$state/docker/dockerd.pid" >"$state/docker/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/docker/pid"
  wait_for docker 60 curl -sf --unix-socket "$docker_sock" http://localhost/_ping
}

stop_docker() {
  pid_alive "$state/docker/pid" || { rm -f "$state/docker/pid"; return 0; }
  log "stopping dockerd"
  local pid; pid=$(cat "$state/docker/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # dockerd leaves its network-namespace mount behind; without this the state folder cannot be removed.
  awk -v root="$state/docker/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
  remove_stale_bridges
  rm -f "$state/docker/pid"
}

# ---------------------------------------------------------------- commands
print_env() {
  wants rabbitmq && echo "export DECKHAND_AMQP_URL=amqp://deckhand:$(secret rabbitmq-password)@127.0.0.1:$amqp_port/"
  wants postgres && echo "export DECKHAND_POSTGRES_URL=postgresql://deckhand:$(secret postgres-password)@127.0.0.1:$pg_port/deckhand"
  wants docker && echo "export DECKHAND_DOCKER_SOCKET=$docker_sock"
  # This dockerd has no default bridge (--bridge=none): sandboxes get Deckhand's own bridge network
  # (docker.bridge_network, on 198.18.0.0/24), with their servers' ports published on 127.0.0.1.
  wants docker && echo "export DECKHAND_DOCKER_NETWORK=bridge"
  return 0
}

status() {
  local rc=0
  if wants rabbitmq; then (rabbit_env; pid_alive "$state/rabbitmq/pid") && echo "rabbitmq: running (127.0.0.1:$amqp_port)" || { echo "rabbitmq: stopped"; rc=1; }; fi
  if wants postgres; then "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && echo "postgres: running (127.0.0.1:$pg_port)" || { echo "postgres: stopped"; rc=1; }; fi
  if wants docker; then curl -sf --unix-socket "$docker_sock" http://localhost/_ping >/dev/null 2>&1 && echo "docker: running ($docker_sock)" || { echo "docker: stopped"; rc=1; }; fi
  return $rc
}

case ${1:-} in
  start)
    install_packages
    mkdir -p "$state"
    wants postgres && start_postgres
    wants docker && start_docker
    wants rabbitmq && start_rabbitmq
    log "ready"
    print_env
    ;;
  stop)
    wants rabbitmq && stop_rabbitmq
    wants docker && stop_docker
    wants postgres && stop_postgres
    true
    ;;
  status) status ;;
  env) print_env ;;
  rabbitmqctl) shift; rabbitmqctl "$@" ;;
  *) echo "usage: $0 start|stop|status|env|rabbitmqctl ARGS..." >&2; exit 2 ;;
esac
