//! TCP connect health checks of load-balancer backends (the IO half of
//! `crate::nat::health`).
//!
//! One tokio task per backend of every `[[nat]]` entry with `health_check`:
//! every `interval` it opens a TCP connection to the backend's address and
//! port and closes it at once; a connection established within `timeout` is a
//! success, anything else (refused, unreachable, timed out) a failure. Results
//! go to the main loop over a bounded channel, tagged with a generation so that
//! results from before a reload (whose rule/backend indices may differ) are
//! ignored; the pipeline's state machine decides up/down. The tasks are
//! aborted and restarted on every reload and end with the shell.

use crate::nat::HealthTarget;
use tokio::sync::mpsc;

/// Results in flight before the oldest is waited for (backpressure on the
/// checkers, never on the data path): one per backend for 256 backends.
pub const CHANNEL: usize = 256;

/// One check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthResult {
    pub generation: u64,
    pub rule: u32,
    pub backend: u32,
    pub ok: bool,
    pub addr: std::net::SocketAddr,
}

/// The running checkers.
pub struct Checker {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    generation: u64,
    tx: mpsc::Sender<HealthResult>,
}

impl Checker {
    pub fn new() -> (Checker, mpsc::Receiver<HealthResult>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (
            Checker {
                tasks: Vec::new(),
                generation: 0,
                tx,
            },
            rx,
        )
    }

    /// The generation results must carry to count.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stops the current checks and starts one task per target.
    pub fn restart(&mut self, targets: Vec<HealthTarget>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.generation += 1;
        for t in targets {
            let tx = self.tx.clone();
            let generation = self.generation;
            self.tasks.push(tokio::spawn(run(t, generation, tx)));
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

async fn run(t: HealthTarget, generation: u64, tx: mpsc::Sender<HealthResult>) {
    let mut every = tokio::time::interval(t.check.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let ok = matches!(
            tokio::time::timeout(t.check.timeout, tokio::net::TcpStream::connect(t.addr)).await,
            Ok(Ok(_))
        );
        let r = HealthResult {
            generation,
            rule: t.rule,
            backend: t.backend,
            ok,
            addr: t.addr,
        };
        if tx.send(r).await.is_err() {
            return;
        }
    }
}
