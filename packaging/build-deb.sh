#!/bin/sh
# Builds the Debian package: target/debian/wshub_<version>-1_<arch>.deb.
#
#   packaging/build-deb.sh
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Generates the files
# the package holds that depend on the version or the build (pkg-config
# file, CMake version file, `wshub --help` text, the stripped archive) into
# target/packaging/,
# then runs `cargo deb` with the assets listed in Cargo.toml
# ([package.metadata.deb]).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}
cargo build --release --lib --bins
out=target/packaging
mkdir -p "$out"
sed -e "s|@PREFIX@|/usr|" -e "s|@VERSION@|$version|" tools/wshub.pc.in > "$out/wshub.pc"
sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" packaging/cmake/wshubConfigVersion.cmake.in \
    > "$out/wshubConfigVersion.cmake"
target/release/wshub --help > "$out/wshub-help.txt"
# The release profile keeps line tables for backtraces (Cargo.toml); the
# package does without: binaries and the .so stripped by cargo deb --strip,
# the archive here (debug sections only: its symbols are needed to link).
strip --strip-debug -o "$out/libwshub.a" target/release/libwshub.a
cargo deb --no-build --strip "$@"
