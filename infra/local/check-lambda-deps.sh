#!/usr/bin/env bash
# Fails if a Lambda binary (every package under functions/) or cairn-aws links rusqlite: SQLite
# is the `sqlite` feature of cairn / cairn-aws, for the dev server, local runs and tests only.
# `cargo tree` reads Cargo.lock and builds nothing (about a second per package). `make lint` runs it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p target
status=0
packages=(cairn-aws)
for manifest in functions/*/Cargo.toml; do
  packages+=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)")
done
for package in "${packages[@]}"; do
  # Normal and build dependencies on every target, as `cargo lambda build --release` links them.
  # ($CHECK_LAMBDA_DEPS_ARGS: extra cargo arguments, to see the check fail: -F cairn-aws/sqlite.)
  if tree="$(${CARGO:-cargo} tree --quiet -p "$package" -e normal,build --target all -i rusqlite \
      ${CHECK_LAMBDA_DEPS_ARGS:-} 2>"$root/target/check-lambda-deps.err")"; then
    echo "check-lambda-deps: $package links rusqlite (the \`sqlite\` feature leaks into Lambda builds):" >&2
    echo "$tree" >&2
    status=1
  elif ! grep -q "did not match any packages" "$root/target/check-lambda-deps.err"; then
    echo "check-lambda-deps: cargo tree -p $package failed:" >&2
    cat "$root/target/check-lambda-deps.err" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "check-lambda-deps: ${packages[*]}: no rusqlite" >&2
exit "$status"
