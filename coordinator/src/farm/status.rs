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
