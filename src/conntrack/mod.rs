//! Connection tracking (see the module docs of the submodules).

mod config;
pub use config::{CtConfig, Timeouts};
