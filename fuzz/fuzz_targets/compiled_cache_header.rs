#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lila::fuzzing::compiled_cache_header(data));
