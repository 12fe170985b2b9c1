//! A key choice (1 byte), a value, 0xFF, an env file's text. See
//! `tokenwarden::fuzzing::dotenv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenwarden::fuzzing::dotenv(data));
