//! Fuzz target: wshub::fuzzing::api_body (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::api_body(data);
});
