//! What the farm reports about itself: a snapshot of workers, jobs and
//! counters, for the web page, the API, `/metrics` and tests.

use tessera_store::JobState;

/// A snapshot for pages, the API and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FarmStatus {
    pub workers: Vec<WorkerStatus>,
    pub jobs: Vec<JobStatus>,
    pub counters: Counters,
    /// Leases held now, over all workers.
    pub leases: usize,
}

/// Monotonic counts since the coordinator started (Prometheus counters).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub tiles_done: u64,
    pub tiles_failed: u64,
    /// Results for tiles leased back to the worker that rendered them
    /// under a lost connection's lease (work a fail-over did not cost).
    pub tiles_adopted: u64,
    pub frames_done: u64,
    pub jobs_submitted: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStatus {
    pub id: u64,
    pub identity: String,
    pub name: String,
    pub slots: u32,
    pub leases: usize,
    pub tiles_done: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    pub id: u64,
    pub name: String,
    pub tiles: u32,
    pub tiles_done: u32,
    pub frames: usize,
    pub frames_done: usize,
    pub state: JobState,
    /// Seconds left at the rate this job's tiles became durable since it
    /// was loaded; `None` without a rate or once finished.
    pub eta_s: Option<f64>,
}

/// How long the store's group commits of verified tiles take (the durable
/// half of every ack): a Prometheus histogram for `/metrics`
/// (`tessera_store_commit_seconds`) and the latest commits for quantiles.
/// Written by the store writer, read by anyone.
#[derive(Debug)]
pub struct CommitTimings {
    /// Commits at most `BUCKETS[i]` seconds (not cumulative; the last
    /// counts the rest).
    counts: [std::sync::atomic::AtomicU64; COMMIT_BUCKETS.len() + 1],
    /// Sum of all commits' durations, in microseconds.
    sum_us: std::sync::atomic::AtomicU64,
    /// The last [`RECENT`] commits' durations, in microseconds.
    recent: std::sync::Mutex<std::collections::VecDeque<u64>>,
}

/// Upper bounds of the histogram's buckets, in seconds.
pub const COMMIT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// Commits kept for [`CommitTimings::quantile`].
const RECENT: usize = 8192;

impl Default for CommitTimings {
    fn default() -> Self {
        CommitTimings {
            counts: Default::default(),
            sum_us: Default::default(),
            recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(RECENT)),
        }
    }
}

impl CommitTimings {
    /// Counts one commit that took `took`.
    pub fn record(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(COMMIT_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        let us = took.as_micros() as u64;
        self.sum_us.fetch_add(us, Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(us);
    }

    /// Cumulative counts per bucket bound (`+Inf` last), the sum in
    /// seconds and the count: a Prometheus histogram.
    pub fn histogram(&self) -> (Vec<(f64, u64)>, f64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut total = 0;
        let mut out = Vec::with_capacity(COMMIT_BUCKETS.len() + 1);
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Relaxed);
            out.push((COMMIT_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        (out, self.sum_us.load(Relaxed) as f64 / 1e6, total)
    }

    /// The `q` quantile (0 to 1) of the latest commits, if there were any.
    pub fn quantile(&self, q: f64) -> Option<std::time::Duration> {
        let mut v: Vec<u64> = self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(std::time::Duration::from_micros(v[at]))
    }
}
