//! Fuzz target: wshub::fuzzing::binary_frame (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::binary_frame(data);
});
