//! The committed `include/wshub.h` must be exactly what cbindgen (pinned in
//! Cargo.toml) generates from `src/ffi/` now; `build.rs` writes the fresh one to
//! `$OUT_DIR`. Regenerate with `WSHUB_WRITE_HEADER=1 cargo build`.

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/wshub.h"));
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/wshub.h");
    let committed = std::fs::read_to_string(committed_path).expect("include/wshub.h is committed");
    assert!(
        committed == generated,
        "include/wshub.h is stale: run `WSHUB_WRITE_HEADER=1 cargo build` and commit it"
    );
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/wshub.h"));
    let version = env!("CARGO_PKG_VERSION");
    assert!(generated.contains(&format!("#define WSHUB_VERSION \"{version}\"")));
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    assert!(generated.contains(&format!("#define WSHUB_VERSION_MAJOR {major}")));
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    assert!(generated.contains(&format!("#define WSHUB_VERSION_MINOR {minor}")));
    let patch = env!("CARGO_PKG_VERSION_PATCH");
    assert!(generated.contains(&format!("#define WSHUB_VERSION_PATCH {patch}")));
}
