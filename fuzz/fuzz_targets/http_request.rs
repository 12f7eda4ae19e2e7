//! The HTTP request head a client sends before the upgrade: request line,
//! headers (Authorization, Origin, Sec-WebSocket-*), query string.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wshub::fuzzing::http_request(data);
});
