#!/usr/bin/env bash
# `make cluster`: a PostgreSQL, a Redis, REPLICAS gateway replicas and nginx in
# front on http://127.0.0.1:3000, all on loopback, data in .cluster/ (git-ignored).
# Ctrl-C stops everything. Point the replicas at an existing PostgreSQL/Redis
# instead with CHAOSAI_DATABASE_URL / CHAOSAI_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

REPLICAS=${REPLICAS:-2}
PORT=${PORT:-3000}
PG_PORT=${PG_PORT:-5433}
REDIS_PORT=${REDIS_PORT:-6380}
FIRST_REPLICA_PORT=${FIRST_REPLICA_PORT:-3001}
HERE=$(pwd)
DIR="$HERE/.cluster"
mkdir -p "$DIR/redis" "$DIR/nginx" "$DIR/logs"

pids=()
stop() {
	trap - INT TERM EXIT
	echo "stopping the cluster"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	# runuser does not pass signals on: stop PostgreSQL through its own pid (fast shutdown).
	if [ -f "$DIR/pg/data/postmaster.pid" ]; then
		kill -INT "$(head -1 "$DIR/pg/data/postmaster.pid")" 2>/dev/null || true
	fi
	wait 2>/dev/null || true
}
trap stop INT TERM EXIT

as_postgres() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "${CHAOSAI_DATABASE_URL:-}" ]; then
	PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	mkdir -p "$DIR/pg"
	[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$DIR/pg"
	if [ ! -f "$DIR/pg/data/PG_VERSION" ]; then
		as_postgres "$PG_BIN/initdb" -D "$DIR/pg/data" -U chaosai -A trust -E UTF8 >"$DIR/logs/initdb.log"
	fi
	as_postgres "$PG_BIN/postgres" -D "$DIR/pg/data" -p "$PG_PORT" -k "$DIR/pg" \
		-c listen_addresses=127.0.0.1 >"$DIR/logs/postgres.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
		sleep 0.1
	done
	"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U chaosai -d postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname = 'chaosai'" | grep -q 1 ||
		"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U chaosai -d postgres -c "CREATE DATABASE chaosai"
	export CHAOSAI_DATABASE_URL="postgres://chaosai@127.0.0.1:$PG_PORT/chaosai"
fi

if [ -z "${CHAOSAI_REDIS_URL:-}" ]; then
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" \
		--save "" --appendonly no >"$DIR/logs/redis.log" 2>&1 &
	pids+=($!)
	export CHAOSAI_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
fi

# One admin token for every replica: the board's cookie works whichever one
# the balancer picks.
if [ -z "${CHAOSAI_ADMIN_TOKEN:-}" ]; then
	[ -f "$DIR/admin-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/admin-token"
	CHAOSAI_ADMIN_TOKEN=$(cat "$DIR/admin-token")
	export CHAOSAI_ADMIN_TOKEN
fi

upstreams=""
for i in $(seq 1 "$REPLICAS"); do
	port=$((FIRST_REPLICA_PORT + i - 1))
	CHAOSAI_ADDR="127.0.0.1:$port" CHAOSAI_REPLICA="replica-$i" \
		LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=chaosai \
		target/release/chaosai >"$DIR/logs/replica-$i.out" 2>"$DIR/logs/replica-$i.log" &
	pids+=($!)
	upstreams+="        server 127.0.0.1:$port max_fails=0;"$'\n'
done

cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx/body;
    proxy_temp_path $DIR/nginx/proxy;
    fastcgi_temp_path $DIR/nginx/fastcgi;
    uwsgi_temp_path $DIR/nginx/uwsgi;
    scgi_temp_path $DIR/nginx/scgi;
    upstream chaosai {
        least_conn;
$upstreams        keepalive 64;
    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    server {
        listen 127.0.0.1:$PORT;
        client_max_body_size 2m;
        location / {
            proxy_pass http://chaosai;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            # Streams and the board's websocket pass through as they are written.
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
    }
}
EOF

for i in $(seq 1 "$REPLICAS"); do
	port=$((FIRST_REPLICA_PORT + i - 1))
	for _ in $(seq 600); do
		curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
done
nginx -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" -g 'daemon off;' &
pids+=($!)

echo "ChaosAI cluster: $REPLICAS replicas behind nginx on http://127.0.0.1:$PORT"
echo "  database: ${CHAOSAI_DATABASE_URL%%\?*}"
echo "  redis:    $CHAOSAI_REDIS_URL"
echo "  board:    http://127.0.0.1:$PORT/chaos (admin token: $CHAOSAI_ADMIN_TOKEN)"
echo "  logs:     $DIR/logs/"
wait -n "${pids[@]}"
