//! Fuzz target: wshub::fuzzing::envelope (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::envelope(data);
});
