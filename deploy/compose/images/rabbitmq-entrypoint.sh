#!/bin/bash
# RabbitMQ of the compose stack, as the user rabbitmq: its configuration names the user and password from
# RABBITMQ_USER and RABBITMQ_PASSWORD (made on first start; there is no guest), then the server runs in the
# foreground. The node's name stays rabbit@<host name>, so its data (a volume) survives a new container.
set -euo pipefail
: "${RABBITMQ_PASSWORD:?RABBITMQ_PASSWORD is not set (deploy/compose/deckhand.env)}"
export RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq.conf
cat >"$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.default = 5672
default_user = ${RABBITMQ_USER:-deckhand}
default_pass = ${RABBITMQ_PASSWORD}
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
log.console = true
log.file = false
CONF
chmod 600 "$RABBITMQ_CONFIG_FILE"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
