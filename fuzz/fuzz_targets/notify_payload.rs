#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lila::fuzzing::notify_payload(data));
