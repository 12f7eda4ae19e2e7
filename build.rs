//! Generates the C header from `src/ffi/` with cbindgen.
//!
//! Always into `$OUT_DIR/wshub.h` (which `tests/header_is_up_to_date.rs` compares
//! with the committed `include/wshub.h`); also into `include/wshub.h` when
//! `WSHUB_WRITE_HEADER=1`, the one way the committed header is regenerated.

use std::env;
use std::path::PathBuf;

/// The initializers of `wshub_callbacks` (src/ffi/callbacks.rs: its size,
/// then one NULL per callback, in field order) and of
/// `wshub_namespace_options` (src/ffi/namespace.rs: its size, then each
/// field's default, in field order). Valid C99 and C++.
const CALLBACKS_INIT: &str = "\
/*
 * Initializes a wshub_callbacks: struct_size set to this header's size of it,
 * every callback NULL. Start every wshub_callbacks from it, then set the
 * callbacks you use.
 */
#define WSHUB_CALLBACKS_INIT { sizeof(wshub_callbacks), NULL, NULL, NULL, NULL, NULL }

/*
 * Initializes a wshub_namespace_options: struct_size set to this header's
 * size of it, and the rules of a room outside any namespace (clients
 * publish; presence, join/leave and typing on; the top-level history; no
 * member limit). Start every wshub_namespace_options from it.
 * WSHUB_NAMESPACE_INHERIT in history_size or history_max_bytes takes the
 * top-level setting.
 */
#define WSHUB_NAMESPACE_INHERIT SIZE_MAX

#define WSHUB_NAMESPACE_OPTIONS_INIT { sizeof(wshub_namespace_options), true, true, true, true, \\
    WSHUB_NAMESPACE_INHERIT, WSHUB_NAMESPACE_INHERIT, WSHUB_NAMESPACE_INHERIT_MS, 0 }
";

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=WSHUB_WRITE_HEADER");
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let mut parts = version.split(['.', '-', '+']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) =
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    // The shared library's SONAME: programs record libwshub.so.<major> and
    // keep working across compatible releases (packaging/ installs the links).
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwshub.so.{major}");
    }
    let mut config = config;
    config.after_includes = Some(format!(
        "\n#define WSHUB_VERSION \"{version}\"\n#define WSHUB_VERSION_MAJOR {major}\n\
         #define WSHUB_VERSION_MINOR {minor}\n#define WSHUB_VERSION_PATCH {patch}\n\n{CALLBACKS_INIT}"
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    bindings.write_to_file(out_dir.join("wshub.h"));
    if env::var("WSHUB_WRITE_HEADER").as_deref() == Ok("1") {
        bindings.write_to_file(crate_dir.join("include/wshub.h"));
    }
}
