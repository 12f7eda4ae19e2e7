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

/// A C program includes the header beside others: every name it defines as a
/// macro is wshub's own (`BIG_REPLY`, a Rust constant, once leaked in).
#[test]
fn every_macro_in_the_header_is_prefixed_wshub() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/wshub.h"));
    let unprefixed: Vec<&str> = generated
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("#define "))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
        .filter(|name| !name.starts_with("WSHUB_"))
        .collect();
    assert!(unprefixed.is_empty(), "macros without the WSHUB_ prefix: {unprefixed:?}");
}
