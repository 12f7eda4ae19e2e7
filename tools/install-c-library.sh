#!/bin/sh
# Installs wshub for C and C++ programs: the static and shared libraries, the
# header and a pkg-config file.
#
#   tools/install-c-library.sh [PREFIX] [LIB_DIR]
#
# PREFIX defaults to /usr/local. LIB_DIR is where libwshub.a/.so already are;
# without it the release build is made first (cargo build --release --lib).
# Afterwards:
#   cc app.c $(pkg-config --cflags --libs wshub)            # shared library
#   cc app.c $(pkg-config --static --cflags --libs wshub)   # static (see docs/c-api.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
libdir_src=${2:-}
if [ -z "$libdir_src" ]; then
    (cd "$root" && cargo build --release --lib)
    libdir_src=$root/target/release
fi
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0644 "$root/include/wshub.h" "$prefix/include/wshub.h"
install -m 0644 "$libdir_src/libwshub.a" "$prefix/lib/libwshub.a"
major=${version%%.*}
# The real file, then the usual links: libwshub.so.MAJOR (the SONAME, what
# programs load) and libwshub.so (what -lwshub finds when linking).
install -m 0755 "$libdir_src/libwshub.so" "$prefix/lib/libwshub.so.$version"
ln -sf "libwshub.so.$version" "$prefix/lib/libwshub.so.$major"
ln -sf "libwshub.so.$major" "$prefix/lib/libwshub.so"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$root/tools/wshub.pc.in" > "$prefix/lib/pkgconfig/wshub.pc"
echo "installed wshub $version into $prefix"
