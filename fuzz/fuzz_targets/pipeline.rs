//! Fuzz target: packet parsing and `Pipeline::handle` over packet sequences.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::pipeline(data);
});
