//! Fuzz target: IDS app-layer parsers (HTTP, TLS ClientHello, DNS) and
//! stream reassembly + matching on arbitrary client streams.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::ids_app(data);
});
