//! Runs the IDS fuzz entry points on a few hundred pseudo-random and
//! structured inputs (what `cargo fuzz run ids_rules` / `ids_app` run), so a
//! panic in the rule parser or the app-layer parsers fails the test suite.

#[test]
fn ids_fuzz_entry_points_do_not_panic() {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"alert tcp any any -> any any (content:\"|00 01|\"; pcre:\"/(?=a)/\"; sid:1;)".to_vec(),
        b"GET /a HTTP/1.1\r\nHost: b\r\nUser-Agent: x\r\n\r\n".to_vec(),
        vec![0x16, 3, 1, 0, 0x30, 1, 0, 0, 0x2c, 3, 3],
        vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'q', 0xc0],
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..300usize {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        seeds.push(v);
    }
    // Structured mutations of the first seeds: truncations.
    for s in seeds.clone().iter().take(4) {
        for cut in 0..s.len() {
            seeds.push(s[..cut].to_vec());
        }
    }
    for s in &seeds {
        portcullis::fuzzing::ids_rules(s);
        portcullis::fuzzing::ids_app(s);
    }
}
