//! portcullis: a userspace WireGuard gateway firewall.
//!
//! Layer map (a sans-IO core, IO at the edges):
//!
//! - [`packet`]: checked parsing, in-place rewrite, checksums, reply builders, defrag.
//! - [`zone`]: zones (`tun`, `local`, `host`, peers, groups).
//! - [`conntrack`]: the flow table and TCP state machine.
//! - [`rules`]: the rule model, a linear reference evaluator and the compiled classifier.
//! - [`nat`]: SNAT/masquerade, DNAT, load balancing, port allocation (NAT44 and NAT66).
//! - [`pipeline`]: `Pipeline::handle(packet, ingress zone, now) -> Verdict`.
//! - [`ids`]: Suricata-syntax signatures, stream reassembly, app-layer
//!   buffers, inline detect/prevent, EVE JSON alerts.
//! - [`blocklist`]: blocked sources and peers (TTL, origin, hits), checked first;
//!   [`anomaly`]: scan, sweep, flood and brute-force detectors feeding it.
//! - [`config`]: TOML -> validated config.
//! - [`verdict`]: decisions and drop reasons.
//! - [`wg`]: the WireGuard peer table (boringtun), keys, wg-quick import/export.
//! - [`netstack`]: rootless mode's smoltcp stack and socket relay state (sans IO).
//! - [`shaper`]: token buckets (per peer, per rule) and connection limits.
//! - [`telemetry`]: EVE JSON records, Prometheus exposition, pcap format, log rate limit.
//! - [`control`]: the control protocol (`portcullis ctl`) and its pure handler.
//! - [`io`]: the tokio shell: TUN, UDP, timers, signals, privilege drop,
//!   control socket, metrics endpoint, event and pcap files, hot reload.
//!
//! The core does no IO, reads no clock and takes no locks: every entry point
//! takes `now`. Sockets, the TUN device, signals and the clock live in `io`.

/// Anomaly detectors (port scan, host sweep, floods, brute force); the file
/// lives beside the IDS it belongs to, the module is declared here so the
/// signature engine's `ids/mod.rs` stays as it is.
#[path = "ids/anomaly.rs"]
pub mod anomaly;
pub mod blocklist;
pub mod config;
pub mod conntrack;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod io;
pub mod nat;
pub mod netstack;
pub mod packet;
pub mod pipeline;
pub mod rules;
pub mod shaper;
pub mod telemetry;
pub mod tracecmd;
pub mod verdict;
pub mod wg;
pub mod zone;
