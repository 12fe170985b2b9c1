//! A Graph answer: 2 bytes of HTTP status (big-endian), then the body. See
//! `tokenwarden::fuzzing::graph_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenwarden::fuzzing::graph_response(data));
