//! Fuzz target: wshub::fuzzing::config_file (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::config_file(data);
});
