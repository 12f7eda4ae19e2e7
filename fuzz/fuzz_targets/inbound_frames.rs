//! Fuzz target: wshub::fuzzing::inbound_frames (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::inbound_frames(data);
});
