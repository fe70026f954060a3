#!/usr/bin/env bash
# A Deckhand cluster on this one machine, for fault drills and for people (issue 15, DESIGN §10): a 3-node
# RabbitMQ cluster, PostgreSQL with a streaming-replication standby, and N Deckhand nodes, each a gateway, a
# conversation worker and a runtime worker (process sandboxes) with a node id and an address of its own on
# the loopback network. Everything listens on 127.0.0.0/8; nothing leaves the machine.
#
#   deploy/cluster.sh up              start the brokers, the databases and every node (builds deckhand if needed)
#   deploy/cluster.sh down            stop everything it started
#   deploy/cluster.sh status          what runs, which broker nodes are in the cluster, which database is primary
#   deploy/cluster.sh env             the URLs every node uses, as shell exports
#   deploy/cluster.sh kill-node N     SIGKILL every process of node N (its sandboxes die with its runtime worker)
#   deploy/cluster.sh start-node N    start node N again
#   deploy/cluster.sh stop-broker N   stop RabbitMQ node N (1..3); start-broker N brings it back into the cluster
#   deploy/cluster.sh promote         stop the primary database and promote the standby
#
# Node N's gateway listens on 127.0.0.1:(3100+N), its sandboxes on 127.0.10.N. State and logs are in
# .deckhand/cluster. Environment: DECKHAND_CLUSTER_NODES (3), DECKHAND_CLUSTER_AMQP_PORT (brokers on base+1..3,
# default 5700), DECKHAND_CLUSTER_PG_PORT (primary; the standby on the next port; default 5440); DECKHAND_LLM_*
# reach every node (without a model, conversations can replay a trajectory).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=$repo/.deckhand/cluster
nodes=${DECKHAND_CLUSTER_NODES:-3}
amqp_base=${DECKHAND_CLUSTER_AMQP_PORT:-5700}
pg_primary=${DECKHAND_CLUSTER_PG_PORT:-5440}
pg_standby=$((pg_primary + 1))
pg_bin=/usr/lib/postgresql/15/bin
rabbit_bin=/usr/lib/rabbitmq/bin
deckhand=$repo/.build/debug/deckhand

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not become ready in ${secs}s (logs in $state)"
    sleep 0.3
  done
}
secret() { # name: made once, kept 0600
  local file=$state/credentials/$1
  if [[ ! -s $file ]]; then
    mkdir -p "$state/credentials"; chmod 700 "$state/credentials"
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
  fi
  cat "$file"
}

# ---------------------------------------------------------------- RabbitMQ: three nodes, one cluster
broker_name() { echo "deckhand-cluster-$1@localhost"; }
broker_port() { echo $((amqp_base + $1)); }
broker_env() { # N
  local dir=$state/rabbitmq-$1
  export HOME=$dir
  export RABBITMQ_NODENAME; RABBITMQ_NODENAME=$(broker_name "$1")
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT; RABBITMQ_NODE_PORT=$(broker_port "$1")
  export RABBITMQ_DIST_PORT=$((RABBITMQ_NODE_PORT + 20000))
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_FEATURE_FLAGS_FILE=$dir/feature_flags RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq RABBITMQ_PID_FILE=$dir/pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
brokerctl() { (broker_env "$1"; shift; "$rabbit_bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"); }

start_broker() { # N
  local n=$1 dir=$state/rabbitmq-$1
  if pid_alive "$dir/pid"; then return; fi
  port_busy "$(broker_port "$n")" && die "port $(broker_port "$n") is taken; set DECKHAND_CLUSTER_AMQP_PORT"
  mkdir -p "$dir/log" "$dir/mnesia"
  # One Erlang cookie for the three nodes: they may cluster, nothing else may talk to them.
  (umask 077; [[ -s $dir/.erlang.cookie ]] || secret erlang-cookie >"$dir/.erlang.cookie")
  chmod 400 "$dir/.erlang.cookie"
  [[ -f $dir/enabled_plugins ]] || echo '[].' >"$dir/enabled_plugins"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$(broker_port "$n")
default_user = deckhand
default_pass = $(secret rabbitmq-password)
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
CONF
  chmod 600 "$dir/rabbitmq.conf"
  log "starting rabbitmq node $n on 127.0.0.1:$(broker_port "$n")"
  (broker_env "$n"; setsid "$rabbit_bin/rabbitmq-server" >"$dir/log/stdout.log" 2>&1 </dev/null & echo $! >"$dir/pid")
}

# A node of a cluster that was stopped waits at boot for the node that stopped last: all are launched first,
# then awaited, then (on their first boot) joined to node 1.
ready_broker() { # N
  local n=$1
  wait_for "rabbitmq node $n" 300 brokerctl "$n" await_startup --timeout 2
  if ((n > 1)) && ! brokerctl "$n" cluster_status 2>/dev/null | grep -q "$(broker_name 1)"; then
    log "rabbitmq node $n joins the cluster of node 1"
    brokerctl "$n" stop_app >/dev/null
    brokerctl "$n" join_cluster "$(broker_name 1)" >/dev/null
    brokerctl "$n" start_app >/dev/null
  fi
  if ((n == 1)); then brokerctl 1 delete_user guest >/dev/null 2>&1 || true; fi
}

stop_broker() { # N
  local dir=$state/rabbitmq-$1
  pid_alive "$dir/pid" || { rm -f "$dir/pid"; return 0; }
  log "stopping rabbitmq node $1"
  brokerctl "$1" shutdown >/dev/null 2>&1 || kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid"
}

# ---------------------------------------------------------------- PostgreSQL: a primary and a standby
pg() { (cd / && runuser -u postgres -- "$@"); }
# The postgres user must reach the data folders: kept in /var/tmp when the repository is out of its reach.
pg_home() {
  local dir=$state/postgres
  if [[ -L $dir ]]; then readlink "$dir"; return; fi
  if [[ -d $dir ]] || (cd / && runuser -u postgres -- test -x "$state"); then echo "$dir"; return; fi
  local outside=/var/tmp/deckhand-cluster-postgres-$(printf '%s' "$state" | md5sum | cut -c1-12)
  mkdir -p "$outside"; ln -sfn "$outside" "$dir"; echo "$outside"
}
pg_running() { [[ -f $1/postmaster.pid ]] && kill -0 "$(head -1 "$1/postmaster.pid")" 2>/dev/null; }

start_databases() {
  mkdir -p "$state"; chmod o+x "$repo/.deckhand" "$state" 2>/dev/null || true
  local home; home=$(pg_home)
  mkdir -p "$home"; chown postgres: "$home"
  local primary=$home/primary standby=$home/standby
  if [[ ! -f $primary/PG_VERSION ]]; then
    log "initdb the primary"
    pg "$pg_bin/initdb" -D "$primary" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >"$home/initdb.log"
    cat >>"$primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_primary
max_connections = 300
wal_level = replica
max_wal_senders = 8
hot_standby = on
unix_socket_directories = '$primary'
password_encryption = scram-sha-256
CONF
    cat >"$primary/pg_hba.conf" <<HBA
local all postgres peer
host all all 127.0.0.1/32 scram-sha-256
host replication replicator 127.0.0.1/32 scram-sha-256
HBA
    chown postgres: "$primary/pg_hba.conf"
  fi
  if ! pg_running "$primary" && [[ ! -f $standby/promoted ]]; then
    port_busy "$pg_primary" && die "port $pg_primary is taken; set DECKHAND_CLUSTER_PG_PORT"
    log "starting the primary database on 127.0.0.1:$pg_primary"
    pg "$pg_bin/pg_ctl" -D "$primary" -l "$home/primary.log" -w -t 60 start >/dev/null
    local password replication
    password=$(secret postgres-password); replication=$(secret replication-password)
    pg "$pg_bin/psql" -h "$primary" -p "$pg_primary" -d postgres -qAt -v ON_ERROR_STOP=1 -v pw="$password" -v rpw="$replication" >/dev/null <<'SQL'
SELECT format('CREATE ROLE deckhand LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deckhand')
\gexec
SELECT format('CREATE ROLE replicator LOGIN REPLICATION PASSWORD %L', :'rpw') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'replicator')
\gexec
SQL
    pg "$pg_bin/psql" -h "$primary" -p "$pg_primary" -d postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'deckhand'" | grep -q 1 ||
      pg "$pg_bin/createdb" -h "$primary" -p "$pg_primary" -O deckhand deckhand
  fi
  if [[ ! -f $standby/PG_VERSION ]]; then
    log "copying the primary into the standby (pg_basebackup)"
    pg env PGPASSWORD="$(secret replication-password)" "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$pg_primary" \
      -U replicator -D "$standby" -R -X stream >/dev/null
    cat >>"$standby/postgresql.conf" <<CONF
port = $pg_standby
unix_socket_directories = '$standby'
CONF
  fi
  if ! pg_running "$standby"; then
    log "starting the standby database on 127.0.0.1:$pg_standby"
    pg "$pg_bin/pg_ctl" -D "$standby" -l "$home/standby.log" -w -t 60 start >/dev/null
  fi
}

stop_databases() {
  [[ -e $state/postgres ]] || return 0
  local home; home=$(pg_home)
  for data in "$home/primary" "$home/standby"; do
    if pg_running "$data"; then
      log "stopping the database in $data"
      pg "$pg_bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
    fi
  done
}

promote() {
  local home; home=$(pg_home)
  if pg_running "$home/primary"; then
    log "stopping the primary database (its loss)"
    pg "$pg_bin/pg_ctl" -D "$home/primary" -m immediate -w stop >/dev/null || true
  fi
  log "promoting the standby"
  pg "$pg_bin/pg_ctl" -D "$home/standby" -w promote >/dev/null
  touch "$home/standby/promoted"
}

# ---------------------------------------------------------------- Deckhand nodes
urls() {
  local brokers="" n
  for n in 1 2 3; do brokers+="${brokers:+,}127.0.0.1:$(broker_port "$n")"; done
  echo "export DECKHAND_AMQP_URL=amqp://deckhand:$(secret rabbitmq-password)@$brokers/"
  echo "export DECKHAND_POSTGRES_URL=postgresql://deckhand:$(secret postgres-password)@127.0.0.1:$pg_primary,127.0.0.1:$pg_standby/deckhand"
}

start_node() { # N
  local n=$1 dir=$state/node-$1
  [[ -x $deckhand ]] || die "no $deckhand: run swift build first (up does)"
  mkdir -p "$dir/sandboxes"
  eval "$(urls)"
  export DECKHAND_NODE_ID=node-$n DECKHAND_NODE_ADVERTISE_HOST=127.0.10.$n
  export DECKHAND_RUNTIME_BACKEND=process DECKHAND_RUNTIME_WORKSPACE_ROOT=$dir/sandboxes
  export DECKHAND_GATEWAY_HOST=127.0.0.1 DECKHAND_GATEWAY_PORT=$((3100 + n))
  local role
  for role in runtime-worker conversation-worker gateway; do
    pid_alive "$dir/$role.pid" && continue
    setsid "$deckhand" "$role" >>"$dir/$role.log" 2>&1 </dev/null &
    echo $! >"$dir/$role.pid"
  done
  wait_for "node $n's gateway" 60 curl -fsS "http://127.0.0.1:$((3100 + n))/health"
  log "node $n: gateway http://127.0.0.1:$((3100 + n)), sandboxes on 127.0.10.$n"
}

kill_node() { # N: every process of the node at once, as a power cut would
  local dir=$state/node-$1 pidfile
  for pidfile in "$dir"/*.pid; do
    [[ -f $pidfile ]] || continue
    kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  log "node $1 killed"
}

stop_node() { # N: gracefully
  local dir=$state/node-$1 pidfile
  for pidfile in "$dir"/*.pid; do
    [[ -f $pidfile ]] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$dir"/*.pid; do
    [[ -f $pidfile ]] || continue
    local pid; pid=$(cat "$pidfile")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

status() {
  local n
  for n in 1 2 3; do
    if pid_alive "$state/rabbitmq-$n/pid"; then echo "rabbitmq $n: running on 127.0.0.1:$(broker_port "$n")"; else echo "rabbitmq $n: stopped"; fi
  done
  pid_alive "$state/rabbitmq-1/pid" && brokerctl 1 cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("broker cluster: running", ", ".join(s.get("running_nodes", [])))' || true
  if [[ -e $state/postgres ]]; then
    local home; home=$(pg_home)
    for data in primary standby; do
      if pg_running "$home/$data"; then
        local port=$pg_primary; [[ $data == standby ]] && port=$pg_standby
        local recovery; recovery=$(pg "$pg_bin/psql" -h "$home/$data" -p "$port" -d postgres -qAt -c "SELECT pg_is_in_recovery()" 2>/dev/null || echo "?")
        echo "database $data: running on 127.0.0.1:$port ($([[ $recovery == f ]] && echo takes writes || echo read-only standby))"
      else
        echo "database $data: stopped"
      fi
    done
  fi
  for ((n = 1; n <= nodes; n++)); do
    local dir=$state/node-$n line="node $n:" role
    for role in gateway conversation-worker runtime-worker; do
      if pid_alive "$dir/$role.pid"; then line+=" $role up"; else line+=" $role down"; fi
    done
    echo "$line"
  done
}

up() {
  [[ $(id -u) == 0 ]] || die "run as root (PostgreSQL runs as the postgres user)"
  if [[ ! -x $deckhand || ! -x $repo/.build/debug/deckhand-sandbox ]]; then
    log "building deckhand"
    (cd "$repo" && swift build --product deckhand && swift build --product deckhand-sandbox) >&2
  fi
  mkdir -p "$state"
  local n
  for n in 1 2 3; do start_broker "$n"; done
  for n in 1 2 3; do ready_broker "$n"; done
  start_databases
  for ((n = 1; n <= nodes; n++)); do start_node "$n"; done
  status
}

down() {
  local n
  for ((n = 1; n <= nodes; n++)); do stop_node "$n"; done
  for n in 3 2 1; do stop_broker "$n"; done
  stop_databases
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) urls ;;
  kill-node) kill_node "${2:?node number}" ;;
  start-node) start_node "${2:?node number}" ;;
  stop-broker) stop_broker "${2:?broker number 1..3}" ;;
  start-broker) start_broker "${2:?broker number 1..3}" && ready_broker "$2" ;;
  promote) promote ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
