#!/usr/bin/env bash
# Fuzz smoke run for CI: fuzzes the frame decoder for a bounded time (FUZZ_SECONDS, default 60),
# installing a minimal nightly toolchain and cargo-fuzz first when they are missing. A crash or
# a leak fails the script; libFuzzer leaves the input in fuzz/artifacts/frame_decode/, and
# `cargo +nightly fuzz run frame_decode <that file>` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
started=$SECONDS

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
echo "fuzz smoke: tools ready after $((SECONDS - started)) s"

# New inputs go to fuzz/corpus (kept between local runs, ignored by git); fuzz/seeds holds one
# valid encoding of every frame kind, so mutation starts from real frames.
mkdir -p fuzz/corpus/frame_decode
cargo +nightly fuzz run frame_decode fuzz/corpus/frame_decode fuzz/seeds/frame_decode -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024
echo "fuzz smoke: done after $((SECONDS - started)) s"
