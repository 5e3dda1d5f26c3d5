#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicap_fuzz::proxy(data));
