//! Telemetry formats: EVE JSON event records, Prometheus text exposition,
//! the pcap record format, log rate limiting and the latency histogram.
//!
//! Everything here is formatting and bookkeeping over values passed in (the
//! time included): no IO, no clock reads. The IO shell (`crate::io`) writes
//! the results to files and sockets.

pub mod eve;
pub mod histogram;
pub mod loglimit;
pub mod metrics;
pub mod pcap;
pub mod prom;
