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
#   deploy/cluster.sh kill-node N     SIGKILL every process of node N, its sandboxes too, at once (a power cut)
#   deploy/cluster.sh start-node N    start node N again
#   deploy/cluster.sh partition N     cut node N off: nothing its processes send reaches anyone (heal undoes it)
#   deploy/cluster.sh heal            end every partition
#   deploy/cluster.sh stop-broker N   stop RabbitMQ node N (1..3); start-broker N brings it back into the cluster
#   deploy/cluster.sh promote         stop the primary database and promote the standby
#
# Node N's gateway listens on 127.0.0.1:(3100+N), its sandboxes on 127.0.10.N. Each node's processes, and the
# sandboxes they start, run in a cgroup of their own (cgroup v2), which is what kill-node kills and what
# partition's firewall rule (iptables OUTPUT, -m cgroup) drops. State and logs are in .deckhand/cluster.
# Environment: DECKHAND_CLUSTER_NODES (3), DECKHAND_CLUSTER_AMQP_PORT (brokers on base+1..3, default 5700),
# DECKHAND_CLUSTER_PG_PORT (primary; the standby on the next port; default 5440), DECKHAND_CLUSTER_GATEWAY_PORT
# (gateways on base+1..N, default 3100), DECKHAND_CLUSTER_STATE (the state folder), DECKHAND_CLUSTER_NAME (the
# prefix of broker node names and cgroups, default deckhand-cluster: two clusters need two names),
# DECKHAND_CLUSTER_BINARY (the deckhand executable, default .build/debug/deckhand); DECKHAND_LLM_* and other
# DECKHAND_* settings reach every node (without a model, conversations can replay a trajectory).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${DECKHAND_CLUSTER_STATE:-$repo/.deckhand/cluster}
name=${DECKHAND_CLUSTER_NAME:-deckhand-cluster}
nodes=${DECKHAND_CLUSTER_NODES:-3}
gateway_base=${DECKHAND_CLUSTER_GATEWAY_PORT:-3100}
amqp_base=${DECKHAND_CLUSTER_AMQP_PORT:-5700}
pg_primary=${DECKHAND_CLUSTER_PG_PORT:-5440}
pg_standby=$((pg_primary + 1))
pg_bin=/usr/lib/postgresql/15/bin
rabbit_bin=/usr/lib/rabbitmq/bin
deckhand=${DECKHAND_CLUSTER_BINARY:-$repo/.build/debug/deckhand}
cgroup_root=/sys/fs/cgroup
[[ -f $cgroup_root/cgroup.procs ]] || cgroup_root=/sys/fs/cgroup/unified  # a hybrid host's v2 hierarchy

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
broker_name() { echo "$name-$1@localhost"; }
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
      -U replicator -D "$standby" -R -X stream -c fast >/dev/null
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

gateway_port() { echo $((gateway_base + $1)); }
# Node N's cgroup (v2): its processes and every sandbox they start, whatever becomes of their parents.
node_cgroup() { echo "$cgroup_root/$name-node-$1"; }

start_node() { # N
  local n=$1 dir=$state/node-$1 cgroup
  [[ -x $deckhand ]] || die "no $deckhand: run swift build first (up does)"
  cgroup=$(node_cgroup "$n")
  mkdir -p "$dir/sandboxes" "$cgroup"
  eval "$(urls)"
  export DECKHAND_NODE_ID=node-$n DECKHAND_NODE_ADVERTISE_HOST=127.0.10.$n
  export DECKHAND_RUNTIME_BACKEND=process DECKHAND_RUNTIME_WORKSPACE_ROOT=$dir/sandboxes
  export DECKHAND_GATEWAY_HOST=127.0.0.1 DECKHAND_GATEWAY_PORT; DECKHAND_GATEWAY_PORT=$(gateway_port "$n")
  local role
  for role in runtime-worker conversation-worker gateway; do
    pid_alive "$dir/$role.pid" && continue
    # The shell joins the node's cgroup, then becomes the role: the pid is the role's from its first instruction.
    setsid bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" "$3"' _ "$cgroup" "$deckhand" "$role" \
      >>"$dir/$role.log" 2>&1 </dev/null &
    echo $! >"$dir/$role.pid"
  done
  wait_for "node $n's gateway" 60 curl -fsS "http://127.0.0.1:$(gateway_port "$n")/health"
  log "node $n: gateway http://127.0.0.1:$(gateway_port "$n"), sandboxes on 127.0.10.$n"
}

kill_cgroup() { # folder: SIGKILL everything in it, and wait until it is empty
  local cgroup=$1 pid
  [[ -d $cgroup ]] || return 0
  if [[ -f $cgroup/cgroup.kill ]]; then
    echo 1 >"$cgroup/cgroup.kill"
  else
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$cgroup/cgroup.procs"
  fi
  for _ in $(seq 1 100); do [[ -s $cgroup/cgroup.procs ]] || return 0; sleep 0.1; done
  die "$cgroup still has processes after SIGKILL"
}

kill_node() { # N: every process of the node at once, sandboxes included, as a power cut would
  local dir=$state/node-$1 pidfile
  kill_cgroup "$(node_cgroup "$1")"
  for pidfile in "$dir"/*.pid; do
    [[ -f $pidfile ]] || continue
    kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  log "node $1 killed"
}

# ---------------------------------------------------------------- partitions
# A partitioned node's processes (and sandboxes) send nothing that arrives: every packet leaving a socket of
# its cgroup is dropped, so its TCP connections stall as over a cut cable, and connections to it get no answer.
partition_rule() { echo "OUTPUT -m cgroup --path ${1#"$cgroup_root"/} -m comment --comment $name-partition -j DROP"; }

partition() { # N
  local cgroup; cgroup=$(node_cgroup "$1")
  [[ -d $cgroup ]] || die "node $1 has no cgroup (is it up?)"
  # shellcheck disable=SC2046 # the rule is words
  iptables -C $(partition_rule "$cgroup") 2>/dev/null || iptables -I $(partition_rule "$cgroup")
  log "node $1 partitioned"
}

heal() {
  local rule
  while rule=$(iptables -S OUTPUT | grep -- "--comment $name-partition" | head -1) && [[ -n $rule ]]; do
    # shellcheck disable=SC2046 # the rule is words
    iptables $(echo "$rule" | sed 's/^-A /-D /')
  done
  log "every partition healed"
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
    if iptables -S OUTPUT 2>/dev/null | grep -q -- "--path ${name}-node-$n .*$name-partition"; then line+=" (partitioned)"; fi
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
  heal
  for ((n = 1; n <= nodes; n++)); do
    stop_node "$n"
    kill_cgroup "$(node_cgroup "$n")"  # the sandboxes the runtime worker left behind
    rmdir "$(node_cgroup "$n")" 2>/dev/null || true
  done
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
  partition) partition "${2:?node number}" ;;
  heal) heal ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
