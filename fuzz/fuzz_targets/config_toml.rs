#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lila::fuzzing::config_toml(data));
