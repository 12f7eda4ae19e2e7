#!/bin/sh
# Builds the Debian package: target/debian/wshub_<version>-1_<arch>.deb.
#
#   packaging/build-deb.sh
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Generates the files
# the package holds that depend on the version or the build (pkg-config
# file, CMake version file, `wshub --help` text and man page, the stripped archive and
# shared library with its links) into
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
# The man page (wshub(1), named by the unit's Documentation=), generated from
# the same CLI definition as --help.
target/release/wshub man | gzip -9n > "$out/wshub.1.gz"
# The release profile keeps line tables for backtraces (Cargo.toml); the
# package does without: binaries stripped by cargo deb --strip, the .so and
# the archive here (the archive of debug sections only: its symbols are
# needed to link).
strip --strip-debug -o "$out/libwshub.a" target/release/libwshub.a
# The shared library under its full version, with the usual links: the
# SONAME libwshub.so.$major (build.rs sets it; what programs load) and the
# development link libwshub.so (what -lwshub finds).
rm -f "$out"/libwshub.so*
strip --strip-unneeded -o "$out/libwshub.so.$version" target/release/libwshub.so
ln -s "libwshub.so.$version" "$out/libwshub.so.$major"
ln -s "libwshub.so.$major" "$out/libwshub.so"
cargo deb --no-build --strip "$@"
