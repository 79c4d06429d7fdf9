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
//! - [`config`]: TOML -> validated config.
//! - [`verdict`]: decisions and drop reasons.
//! - [`wg`]: the WireGuard peer table (boringtun), keys, wg-quick import/export.
//! - [`netstack`]: rootless mode's smoltcp stack and socket relay state (sans IO).
//! - [`io`]: the tokio shell: TUN, UDP, timers, signals, privilege drop.
//!
//! The core does no IO, reads no clock and takes no locks: every entry point
//! takes `now`. Sockets, the TUN device, signals and the clock live in `io`.

pub mod config;
pub mod conntrack;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod nat;
pub mod netstack;
pub mod packet;
pub mod pipeline;
pub mod rules;
pub mod tracecmd;
pub mod verdict;
pub mod wg;
pub mod zone;
