//! Fuzz target: the Suricata rule parser (skip reasons, never a panic).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::ids_rules(data);
});
