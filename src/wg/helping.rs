//! A pool of worker threads that *help* the calling thread through a list
//! of independent jobs (the crypto workers of `wg::parallel`).
//!
//! What it promises:
//! - every job runs exactly once, on the caller or on one worker, and all of
//!   them have finished (their writes visible) when [`HelpingPool::run`]
//!   returns;
//! - the caller never waits for a worker that has not started: jobs are
//!   claimed one at a time from a shared counter, the caller claims from the
//!   moment the round is published, and once it finds nothing left it
//!   withdraws the round and waits only for the jobs a worker is running.
//!   So a round with the pool costs what it costs inline plus the
//!   publication (a lock, and a futex wake when a worker sleeps), never a
//!   worker's wake-up latency (which was a whole round, ~20-40 µs, with the
//!   fork-join pool this replaced: a bin handed to a worker waited for it to
//!   be scheduled);
//! - a worker spins for [`SPIN`] after a round (yielding the core to anything
//!   else runnable) before it sleeps, so rounds that follow each other
//!   closely find it awake;
//! - no allocation per round; dropping the pool stops and joins the workers.
//!
//! Safety: a round lives on the caller's stack. Workers reach it through a
//! type-erased pointer that is published and withdrawn under the slot's
//! lock; a worker registers itself (`inside`) under the same lock before it
//! touches the round, and the caller, after withdrawing it, waits until
//! `inside` is zero before the round goes out of scope. Jobs are claimed by
//! a `fetch_add` on the round's counter, so each `&mut` job is used by one
//! thread only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker stays awake after a round, waiting for the next one.
pub const SPIN: Duration = Duration::from_micros(50);

/// A round as the workers see it: "claim and run jobs until none is left".
trait Help: Sync {
    fn help(&self);
}

struct Round<'a, W, F> {
    jobs: *mut W,
    len: usize,
    next: AtomicUsize,
    run: &'a F,
}

// SAFETY: a job is handed to the one thread whose `fetch_add` claimed its
// index (`W: Send`); `run` is shared (`F: Sync`).
unsafe impl<W: Send, F: Sync> Sync for Round<'_, W, F> {}

impl<W: Send, F: Fn(&mut W) + Sync> Help for Round<'_, W, F> {
    fn help(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.len {
                return;
            }
            // SAFETY: `i < len` indexes the caller's slice, alive until every
            // helper has left (`run` waits for `inside == 0`), and no other
            // thread got index `i`.
            let job = unsafe { &mut *self.jobs.add(i) };
            (self.run)(job);
        }
    }
}

/// The published round, lifetime erased (see the module's safety note).
#[derive(Clone, Copy)]
struct RoundPtr(*const (dyn Help + 'static));

// SAFETY: the pointee is `Sync`, and it is only dereferenced while the
// publishing caller keeps it alive.
unsafe impl Send for RoundPtr {}

#[derive(Default)]
struct Slot {
    round: Option<RoundPtr>,
    /// Workers asleep on `wake`.
    asleep: usize,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// Bumped (under the lock) when a round is published.
    epoch: AtomicU64,
    /// Workers inside the current round.
    inside: AtomicUsize,
    stop: AtomicBool,
    /// Rounds a worker took part in, and jobs it ran (tests, counters).
    helped_rounds: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // a worker that panicked inside a job leaves the lock unpoisoned
        // (jobs run outside it); recover anyway
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Leaves the round even if the job panicked, so the caller cannot hang.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// The caller plus `workers` helper threads.
pub struct HelpingPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// One caller at a time.
    caller: Mutex<()>,
}

impl std::fmt::Debug for HelpingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelpingPool")
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl HelpingPool {
    /// Starts `workers` threads named `{name}-{i}`.
    pub fn new(workers: usize, name: &str) -> std::io::Result<HelpingPool> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&s));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // stop the ones already started
                    drop(HelpingPool {
                        shared,
                        threads,
                        caller: Mutex::new(()),
                    });
                    return Err(e);
                }
            }
        }
        Ok(HelpingPool {
            shared,
            threads,
            caller: Mutex::new(()),
        })
    }

    /// Helper threads (the caller not counted).
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Times a worker entered a round (it may have found every job taken).
    pub fn helped_rounds(&self) -> u64 {
        self.shared.helped_rounds.load(Ordering::Relaxed)
    }

    /// Runs `run` on every job, the caller and the workers claiming them in
    /// order (put the heaviest first). Returns when all have finished.
    pub fn run<W: Send, F: Fn(&mut W) + Sync>(&self, jobs: &mut [W], run: F) {
        if jobs.is_empty() {
            return;
        }
        let _one = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let round = Round {
            jobs: jobs.as_mut_ptr(),
            len: jobs.len(),
            next: AtomicUsize::new(0),
            run: &run,
        };
        if jobs.len() == 1 || self.threads.is_empty() {
            round.help();
            return;
        }
        let short: &(dyn Help + '_) = &round;
        // SAFETY: only the lifetime is erased; the pointer is withdrawn and
        // every worker has left before `round` is dropped (below).
        let ptr = unsafe {
            std::mem::transmute::<*const (dyn Help + '_), *const (dyn Help + 'static)>(short)
        };
        let asleep = {
            let mut slot = self.shared.lock();
            slot.round = Some(RoundPtr(ptr));
            self.shared.epoch.fetch_add(1, Ordering::Release);
            slot.asleep
        };
        // withdraws the round and waits for the workers in it, also when a
        // job panics on the caller
        let _withdraw = Withdraw(&self.shared);
        if asleep > 0 {
            self.shared.wake.notify_all();
        }
        round.help();
    }
}

/// Withdraws the published round and waits until no worker is inside it.
struct Withdraw<'a>(&'a Shared);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.lock().round = None;
        // only jobs a worker is running now are left
        let mut spins = 0u32;
        while self.0.inside.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for HelpingPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // a worker checks `stop` under the lock before it sleeps: taking the
        // lock here means it either saw it or is asleep and gets the notify
        drop(self.shared.lock());
        self.shared.wake.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared) {
    // 0: a round published before this thread started is still new to it
    let mut seen = 0;
    loop {
        // awake for SPIN: cheap polling of the epoch, giving the core away
        let since = Instant::now();
        let mut polls = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
            polls += 1;
            if polls.is_multiple_of(64) {
                if since.elapsed() >= SPIN {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let mut slot = s.lock();
        while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
            slot.asleep += 1;
            slot = s.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            slot.asleep -= 1;
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = s.epoch.load(Ordering::Acquire);
        let Some(RoundPtr(ptr)) = slot.round else {
            continue; // withdrawn already: the caller did it all
        };
        s.inside.fetch_add(1, Ordering::Acquire);
        drop(slot);
        let _leave = Leave(&s.inside);
        s.helped_rounds.fetch_add(1, Ordering::Relaxed);
        // SAFETY: registered in `inside` while the round was published; the
        // caller keeps it alive until `inside` is zero again.
        unsafe { &*ptr }.help();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_job_runs_once_and_is_visible_after() {
        let pool = HelpingPool::new(3, "t").expect("pool");
        for round in 0..2000u32 {
            let n = (round % 17) as usize;
            let mut jobs: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, 0)).collect();
            pool.run(&mut jobs, |j| j.1 += j.0 + round);
            for (i, j) in jobs.iter().enumerate() {
                assert_eq!(j.1, i as u32 + round, "round {round} job {i}");
            }
        }
    }

    #[test]
    fn a_worker_helps_while_the_caller_is_busy() {
        // job 0 waits (bounded) until job 1 has run: that needs a second
        // thread, since whoever claimed job 0 cannot claim job 1
        let pool = HelpingPool::new(1, "t").expect("pool");
        let flag = AtomicU32::new(0);
        let mut jobs = [0u8, 1u8];
        let saw = AtomicBool::new(false);
        pool.run(&mut jobs, |j| {
            if *j == 0 {
                let t = Instant::now();
                while flag.load(Ordering::Acquire) == 0 && t.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
                saw.store(flag.load(Ordering::Acquire) == 1, Ordering::Release);
            } else {
                flag.store(1, Ordering::Release);
            }
        });
        assert!(
            saw.load(Ordering::Acquire),
            "no worker ran job 1 concurrently"
        );
        assert!(pool.helped_rounds() >= 1);
    }

    /// Job 0 waits (bounded) for job 1 to start; job 1 panics when a worker
    /// runs it. Returns whether a worker died.
    fn kill_the_worker(pool: &HelpingPool) -> bool {
        let started = AtomicBool::new(false);
        let died = AtomicBool::new(false);
        let mut jobs = [0u8, 1u8];
        pool.run(&mut jobs, |j| {
            if *j == 0 {
                let t = Instant::now();
                while !started.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
            } else {
                started.store(true, Ordering::Release);
                let me = std::thread::current();
                if me.name().is_some_and(|n| n.starts_with("victim-")) {
                    died.store(true, Ordering::Release);
                    panic!("a job panicked on a worker (expected by this test)");
                }
            }
        });
        died.load(Ordering::Acquire)
    }

    #[test]
    fn rounds_complete_without_the_workers() {
        // once its only worker is gone (a job panicked on it), the caller
        // runs every round alone: it never waits for a worker to come
        let pool = HelpingPool::new(1, "victim").expect("pool");
        let mut dead = false;
        for _ in 0..200 {
            if kill_the_worker(&pool) {
                dead = true;
                break;
            }
        }
        assert!(dead, "the worker never took job 1 in 200 rounds");
        let mut jobs = [0u64; 64];
        for r in 1..=100u64 {
            pool.run(&mut jobs, |j| *j += 1);
            assert!(jobs.iter().all(|&j| j == r));
        }
        assert_eq!(pool.shared.inside.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_job_panicking_on_the_caller_unwinds_safely() {
        let pool = HelpingPool::new(1, "t").expect("pool");
        let mut unwound = 0;
        for _ in 0..20 {
            let on_caller = AtomicBool::new(false);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut jobs = [0u8; 8];
                pool.run(&mut jobs, |j| {
                    *j = 1;
                    if std::thread::current()
                        .name()
                        .is_none_or(|n| !n.starts_with("t-"))
                    {
                        on_caller.store(true, Ordering::Release);
                        panic!("a job panicked on the caller (expected by this test)");
                    }
                });
            }));
            // the worker may have claimed all eight before the caller one
            assert_eq!(r.is_err(), on_caller.load(Ordering::Acquire));
            unwound += usize::from(r.is_err());
            assert_eq!(pool.shared.inside.load(Ordering::Acquire), 0);
        }
        assert!(unwound > 0);
        let mut jobs = [0u8; 4];
        pool.run(&mut jobs, |j| *j = 7);
        assert_eq!(jobs, [7; 4]);
    }
}
