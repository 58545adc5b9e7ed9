#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lila::fuzzing::message_statuses(data));
