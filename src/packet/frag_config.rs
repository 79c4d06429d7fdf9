//! Fragment reassembly settings.

use std::time::Duration;

/// Bounds for IP fragment reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    /// Total bytes held in incomplete datagrams (kernel: ipfrag_high_thresh 4 MiB).
    pub max_bytes: usize,
    /// Incomplete datagrams held at once.
    pub max_datagrams: usize,
    /// Fragments per datagram (kernel: ipfrag_max_dist-like bound, 64).
    pub max_fragments: usize,
    /// An incomplete datagram expires after this (kernel: ipfrag_time 30 s).
    pub timeout: Duration,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            max_bytes: 4 << 20,
            max_datagrams: 1024,
            max_fragments: 64,
            timeout: Duration::from_secs(30),
        }
    }
}
