#!/usr/bin/env bash
# The test services, installed once into a cache and started on loopback:
# - Kafka: tansu, built from its crates (~15 minutes on 2 cores) with fixes that
#   make it answer as Kafka does (scripts/tansu/*.patch: fetches from inside a
#   stored batch, watermarks, DeleteRecords, and a group coordinator that hands a
#   dead member's partitions on), on 127.0.0.1:19092;
# - S3: s3s-fs, built from its crate, serving a temp folder on 127.0.0.1:19000;
# - OpenSearch API: osmem-server from PyPI (in a venv), on 127.0.0.1:19200;
# - PostgreSQL: the machine's server on 127.0.0.1:5432 (trust auth) when one
#   listens there; otherwise Debian's package is installed (if missing) and a
#   throwaway trust-auth cluster started there. Either way the database `test`
#   is created if missing; each test makes its own schema in it.
# - RabbitMQ: the machine's server on 127.0.0.1:5672 (guest/guest) when one
#   listens there; otherwise Debian's package is installed (if missing) and its
#   server started detached (and left running: `rabbitmqctl stop` ends it). Each
#   test uses its own queues, and the restart test its own vhost (rabbitmqctl).
# scripts/test.sh sources this file. Run it directly to start the services for
# `cargo test` by hand: it prints the environment the tests read and waits (Ctrl-C
# stops the services).
# Built tools live outside the checkout too, so a fresh clone on the same machine
# (as CI makes) reuses them; `tools/` in the repo links to the cache.
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
TANSU_VERSION=0.6.0
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The build's folder names its patches, so a build without the current ones is
# not reused.
TANSU_BUILD="tansu-$TANSU_VERSION-$(cat "$SCRIPTS"/tansu/*.patch | sha256sum | cut -c1-12)"
TANSU="$TOOLS/$TANSU_BUILD/bin/tansu"
S3S_VERSION=0.14.1
S3S="$TOOLS/s3s-fs-$S3S_VERSION/bin/s3s-fs"
OSMEM_VERSION=0.1.6
OSMEM_VENV="$TOOLS/osmem-$OSMEM_VERSION"
export SLUICE_TEST_KAFKA="${SLUICE_TEST_KAFKA:-127.0.0.1:19092}"
export SLUICE_TEST_S3="${SLUICE_TEST_S3:-http://127.0.0.1:19000}"
export SLUICE_TEST_ELASTICSEARCH="${SLUICE_TEST_ELASTICSEARCH:-http://127.0.0.1:19200}"
export SLUICE_TEST_POSTGRES="${SLUICE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
export SLUICE_TEST_RABBITMQ="${SLUICE_TEST_RABBITMQ:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# The S3 tests' credentials; s3s-fs is started with the same pair.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-sluice-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-sluice-test-secret}"
PIDS=()
S3_ROOT=""
PG_ROOT=""
PG_RUN=()
stop_services() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$S3_ROOT" ] || rm -rf "$S3_ROOT"
  if [ -n "$PG_ROOT" ]; then
    "${PG_RUN[@]}" "$(pg_bin)/pg_ctl" stop -D "$PG_ROOT/data" -m immediate >/dev/null 2>&1 || true
    rm -rf "$PG_ROOT"
  fi
}
trap stop_services EXIT

install_tansu() {
  if [ ! -x "$TANSU" ]; then
    echo "==> building tansu $TANSU_VERSION with scripts/tansu/*.patch (once; cached in $TOOLS)"
    local src crate dir
    src="$(mktemp -d)"
    # The two crates the patches fix, fetched and unpacked by cargo itself: a
    # scratch package depends on them, and cargo metadata says where they are.
    mkdir -p "$src/fetch/src"
    touch "$src/fetch/src/lib.rs"
    printf '[package]\nname = "tansu-sources"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ntansu-broker = "=%s"\ntansu-storage = "=%s"\n' \
      "$TANSU_VERSION" "$TANSU_VERSION" > "$src/fetch/Cargo.toml"
    cargo metadata --quiet --format-version 1 --manifest-path "$src/fetch/Cargo.toml" > "$src/metadata.json"
    for crate in tansu-broker tansu-storage; do
      dir="$(grep -o "\"manifest_path\":\"[^\"]*/$crate-$TANSU_VERSION/Cargo.toml\"" "$src/metadata.json" \
        | head -n 1 | sed -e 's/^"manifest_path":"//' -e 's#/Cargo.toml"$##')"
      if [ -z "$dir" ]; then
        echo "cargo did not fetch $crate $TANSU_VERSION" >&2
        exit 1
      fi
      cp -r "$dir" "$src/$crate"
      patch --quiet -d "$src/$crate" -p1 < "$SCRIPTS/tansu/$crate.patch"
    done
    cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
      --features dynostore --root "$TOOLS/$TANSU_BUILD" \
      --config "patch.crates-io.tansu-broker.path='$src/tansu-broker'" \
      --config "patch.crates-io.tansu-storage.path='$src/tansu-storage'"
    rm -rf "$src"
  fi
  mkdir -p tools
  ln -sfn "$TOOLS/$TANSU_BUILD" tools/tansu
}

install_s3s() {
  if [ ! -x "$S3S" ]; then
    echo "==> building s3s-fs $S3S_VERSION (once; cached in $TOOLS)"
    cargo install s3s-fs --version "$S3S_VERSION" --locked --features binary \
      --root "$TOOLS/s3s-fs-$S3S_VERSION"
  fi
}

install_osmem() {
  if [ ! -x "$OSMEM_VENV/bin/osmem-server" ]; then
    echo "==> installing osmem-server $OSMEM_VERSION (once; cached in $TOOLS)"
    rm -rf "$OSMEM_VENV"
    python3 -m venv "$OSMEM_VENV"
    "$OSMEM_VENV/bin/pip" install --quiet "osmem-server==$OSMEM_VERSION"
    # The package ships a ready binary; link it where the check above looks.
    ln -sf "$("$OSMEM_VENV/bin/python" -c 'import osmem_server, os; print(os.path.dirname(osmem_server.__file__))')/bin/osmem-server" \
      "$OSMEM_VENV/bin/osmem-server"
  fi
}

# start NAME HOST:PORT COMMAND...: run a server in the background, logging to
# target/NAME.log, and wait until its port accepts connections.
start() {
  local name="$1" addr="$2"
  shift 2
  mkdir -p target
  "$@" >"target/$name.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
      echo "==> $name listening on $addr"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  cat "target/$name.log" >&2
  exit 1
}

start_services() {
  start tansu "$SLUICE_TEST_KAFKA" "$TANSU" broker \
    --listener-url "tcp://$SLUICE_TEST_KAFKA" \
    --advertised-listener-url "tcp://$SLUICE_TEST_KAFKA" \
    --storage-engine memory://tansu/
  local s3_addr="${SLUICE_TEST_S3#http://}"
  S3_ROOT="$(mktemp -d)"
  # Tests make buckets as folders here (s3s-fs serves each folder as a bucket).
  export SLUICE_TEST_S3_ROOT="$S3_ROOT"
  start s3s-fs "$s3_addr" "$S3S" --host "${s3_addr%:*}" --port "${s3_addr##*:}" \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3_ROOT"
  local es_addr="${SLUICE_TEST_ELASTICSEARCH#http://}"
  start osmem "$es_addr" "$OSMEM_VENV/bin/osmem-server" -addr "$es_addr" -no-stdin-watch
  start_postgres
  start_rabbitmq
}

# The newest installed PostgreSQL server's bin folder, if any.
pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install_postgres() {
  if (exec 3<>"/dev/tcp/127.0.0.1/5432") 2>/dev/null || [ -n "$(pg_bin)" ]; then
    return 0
  fi
  echo "==> installing PostgreSQL (Debian's package)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
}

# Use the PostgreSQL listening on 127.0.0.1:5432, or start a throwaway cluster
# there (trust auth, user postgres); then make sure database `test` exists.
start_postgres() {
  if ! (exec 3<>"/dev/tcp/127.0.0.1/5432") 2>/dev/null; then
    local bin
    bin="$(pg_bin)"
    PG_ROOT="$(mktemp -d)"
    # PostgreSQL refuses to run as root: as root, run it as the package's user.
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$PG_ROOT"
      PG_RUN=(runuser -u postgres --)
    fi
    "${PG_RUN[@]}" "$bin/initdb" --auth=trust --username=postgres -D "$PG_ROOT/data" >"target/postgres-init.log" 2>&1 \
      || { cat target/postgres-init.log >&2; exit 1; }
    start postgres 127.0.0.1:5432 "${PG_RUN[@]}" "$bin/postgres" -D "$PG_ROOT/data" \
      -c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories="$PG_ROOT" \
      -c fsync=off -c max_connections=200
  fi
  local psql=(psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -tA)
  for _ in $(seq 1 50); do
    "${psql[@]}" -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  if [ -z "$("${psql[@]}" -c "select 1 from pg_database where datname = 'test'")" ]; then
    "${psql[@]}" -c 'create database test' >/dev/null
    echo "==> created PostgreSQL database test"
  fi
}

install_rabbitmq() {
  if (exec 3<>"/dev/tcp/127.0.0.1/5672") 2>/dev/null || command -v rabbitmq-server >/dev/null; then
    return 0
  fi
  echo "==> installing RabbitMQ (Debian's package)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The package's post-install starts the server where an init system runs; the
  # start below covers machines without one.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
}

# Use the RabbitMQ listening on 127.0.0.1:5672, or start the installed server
# detached and wait until it takes connections. It is the machine's service, so
# it is not stopped with the others: the restart test only closes connections.
start_rabbitmq() {
  if (exec 3<>"/dev/tcp/127.0.0.1/5672") 2>/dev/null; then
    echo "==> RabbitMQ listening on 127.0.0.1:5672"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  mkdir -p target
  $sudo rabbitmq-server -detached >"target/rabbitmq.log" 2>&1 || true
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/5672") 2>/dev/null; then
      $sudo rabbitmqctl await_startup >/dev/null 2>&1 || true
      echo "==> RabbitMQ listening on 127.0.0.1:5672"
      return 0
    fi
    sleep 0.2
  done
  echo "RabbitMQ did not start; its log:" >&2
  cat "target/rabbitmq.log" >&2
  exit 1
}

install_services() {
  install_tansu
  install_s3s
  install_osmem
  install_postgres
  install_rabbitmq
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  install_services
  start_services
  echo "export SLUICE_TEST_KAFKA=$SLUICE_TEST_KAFKA SLUICE_TEST_S3=$SLUICE_TEST_S3 SLUICE_TEST_ELASTICSEARCH=$SLUICE_TEST_ELASTICSEARCH SLUICE_TEST_POSTGRES=$SLUICE_TEST_POSTGRES SLUICE_TEST_RABBITMQ=$SLUICE_TEST_RABBITMQ SLUICE_TEST_S3_ROOT=$SLUICE_TEST_S3_ROOT AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
  wait
fi
