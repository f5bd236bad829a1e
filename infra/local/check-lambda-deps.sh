#!/usr/bin/env bash
# Fails if a Lambda binary (every package under functions/) or cairn-aws links rusqlite: SQLite
# is the `sqlite` feature of cairn / cairn-aws, for the dev server, local runs and tests only.
#
# Two checks, neither builds anything (a few seconds in all); `make lint` runs them:
# - each binary as `sam build` makes it: `cargo lambda build --release --bin <name>` at the
#   workspace root, whose features cargo resolves over the default members (the root
#   Cargo.toml leaves cairn-dev out for this reason). Cargo's unit graph lists every crate such a
#   build compiles (`--unit-graph` is unstable: RUSTC_BOOTSTRAP=1, as `make fuzz` does);
# - each package on its own (`cargo tree -p`), normal and build dependencies on every target.
#
# $CHECK_LAMBDA_DEPS_ARGS: extra cargo arguments, e.g. `-F cairn-aws/sqlite` to see it fail.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p target
cargo="${CARGO:-cargo}"
err="$root/target/check-lambda-deps.err"
status=0
functions=()
for manifest in functions/*/Cargo.toml; do
  # Binaries only (functions/registry is the list of them, a library).
  [ -f "$(dirname "$manifest")/src/main.rs" ] || continue
  functions+=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)")
done
for binary in "${functions[@]}"; do
  # shellcheck disable=SC2086
  if ! graph="$(RUSTC_BOOTSTRAP=1 $cargo build --release --bin "$binary" --unit-graph -Z unstable-options \
      ${CHECK_LAMBDA_DEPS_ARGS:-} 2>"$err")"; then
    echo "check-lambda-deps: cargo build --bin $binary --unit-graph failed:" >&2
    cat "$err" >&2
    status=1
  elif grep -q '"pkg_id":"[^"]*rusqlite' <<<"$graph"; then
    echo "check-lambda-deps: \`sam build\` of $binary (cargo lambda build --release --bin $binary) would link rusqlite" >&2
    status=1
  fi
done
for package in cairn-aws "${functions[@]}"; do
  # shellcheck disable=SC2086
  if tree="$($cargo tree --quiet -p "$package" -e normal,build --target all -i rusqlite \
      ${CHECK_LAMBDA_DEPS_ARGS:-} 2>"$err")"; then
    # Empty: rusqlite is in the graph only through dev-dependencies (cairn-aws's own tests).
    if [ -n "$tree" ]; then
      echo "check-lambda-deps: $package links rusqlite (the \`sqlite\` feature leaks into Lambda builds):" >&2
      echo "$tree" >&2
      status=1
    fi
  elif ! grep -q "did not match any packages" "$err"; then
    echo "check-lambda-deps: cargo tree -p $package failed:" >&2
    cat "$err" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "check-lambda-deps: no rusqlite in cairn-aws nor in ${functions[*]}" >&2
exit "$status"
