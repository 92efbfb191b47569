#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, docs, then every test.
# It installs what it needs itself; nothing may be assumed installed by hand.
# HTTP targets and receivers in the tests are in-process servers on loopback; the
# Kafka tests need a Kafka-protocol broker, which this script builds once (tansu,
# ~15 minutes on 2 cores), caches, and starts on 127.0.0.1:19092.
set -euo pipefail
cd "$(dirname "$0")/.."

# Built tools live outside the checkout too, so a fresh clone on the same machine
# (as CI makes) reuses them; `tools/` in the repo links to the cache.
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
TANSU_VERSION=0.6.0
TANSU="$TOOLS/tansu-$TANSU_VERSION/bin/tansu"
export SLUICE_TEST_KAFKA="${SLUICE_TEST_KAFKA:-127.0.0.1:19092}"

install_tansu() {
  if [ ! -x "$TANSU" ]; then
    echo "==> building tansu $TANSU_VERSION (once; cached in $TOOLS)"
    cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
      --features dynostore --root "$TOOLS/tansu-$TANSU_VERSION"
  fi
  mkdir -p tools
  ln -sfn "$TOOLS/tansu-$TANSU_VERSION" tools/tansu
}

start_kafka() {
  local port="${SLUICE_TEST_KAFKA##*:}"
  mkdir -p target
  "$TANSU" broker --listener-url "tcp://$SLUICE_TEST_KAFKA" \
    --advertised-listener-url "tcp://$SLUICE_TEST_KAFKA" \
    --storage-engine memory://tansu/ >target/tansu.log 2>&1 &
  TANSU_PID=$!
  trap 'kill "$TANSU_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "==> tansu listening on $SLUICE_TEST_KAFKA"
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not start; its log:" >&2
  cat target/tansu.log >&2
  exit 1
}

if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

install_tansu
start_kafka

echo "==> cargo test"
cargo test --workspace --locked "$@"
