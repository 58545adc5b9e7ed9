#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lila::fuzzing::forward_proof(data));
