//! Operations settings: the control socket, metrics, event logs, packet
//! capture and rate limits (`[control]`, `[metrics]`, `[events]`,
//! `[capture]`, `[limits]`). Validated in `build/ops.rs`; every key is
//! documented in `conf/gateway.toml`.

use crate::shaper::ShaperConfig;
use crate::verdict::Chain;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/portcullis/control.sock";

/// `[control]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `None`: no control socket.
    pub socket: Option<PathBuf>,
    /// Group allowed to use the socket (mode 0660); without it mode 0600.
    pub group: Option<String>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: Some(PathBuf::from(DEFAULT_SOCKET)),
            group: None,
        }
    }
}

/// `[events]`: the EVE JSON stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// `None`: no EVE file (rule log events still go to the log).
    pub eve_file: Option<PathBuf>,
    /// Write `flow` records when flows end.
    pub flows: bool,
    /// Write `drop` records for dropped/rejected packets.
    pub drops: bool,
    /// Records (and rule log lines) per second; 0: unlimited.
    pub rate_per_sec: u32,
    pub burst: u32,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            eve_file: None,
            flows: true,
            drops: true,
            rate_per_sec: 100,
            burst: 200,
        }
    }
}

/// Which packets `[capture]` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureWhat {
    /// Dropped and rejected packets.
    #[default]
    Drops,
    /// Every packet the pipeline sees.
    All,
    /// Only packets dropped or rejected by the rules listed in `rules`.
    Rules,
}

/// `[capture]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `None`: no capture.
    pub file: Option<PathBuf>,
    pub what: CaptureWhat,
    /// `(chain, rule index)` of the rules named in `rules`.
    pub rules: Vec<(Chain, u32)>,
    /// Size of one file before it rotates.
    pub max_bytes: u64,
    /// Files kept (`file`, `file.1`, ... `file.(files-1)`).
    pub files: u32,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            file: None,
            what: CaptureWhat::Drops,
            rules: Vec::new(),
            max_bytes: 16 * 1024 * 1024,
            files: 4,
        }
    }
}

/// All operations settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ops {
    pub control: Control,
    /// `[metrics] listen`: `None` is off (the default).
    pub metrics: Option<SocketAddr>,
    pub events: Events,
    pub capture: Capture,
    /// `[limits]`
    pub limits: ShaperConfig,
}
