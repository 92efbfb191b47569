#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, docs, then every test.
# It installs what it needs itself; nothing may be assumed installed by hand.
# HTTP targets and receivers in the tests are in-process servers on loopback; the
# other services are real servers on loopback (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs and starts the test services (see scripts/services.sh).
source scripts/services.sh

if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> every connector feature alone, and none, builds and passes clippy"
# The connectors' features, read from their manifest's [features] table.
features="$(sed -n '/^\[features\]/,/^\[/p' connectors/Cargo.toml | grep -oE '^[a-z0-9_-]+ =' | cut -d' ' -f1 | grep -v '^default$')"
for feature in "" $features; do
  cargo clippy --quiet --locked -p sluice-connectors --all-targets --no-default-features \
    ${feature:+--features "$feature"} -- -D warnings
  cargo clippy --quiet --locked -p sluice --no-default-features \
    ${feature:+--features "$feature"} -- -D warnings
done

echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

install_services
start_services

echo "==> cargo test"
cargo test --workspace --locked "$@"
