//! Fuzz target: config loading (TOML text -> validated config or errors).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::config(data);
});
