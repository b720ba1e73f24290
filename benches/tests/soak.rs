//! A short soak (`cargo xtask soak` runs the long one): a coordinator under
//! simulated QUIC workers and concurrent API clients answers every request,
//! keeps every worker, and completes jobs, with verification off and with
//! the farm's default verification (spot checks, replication). Latency and
//! memory bounds are the long run's business; here they are wide, as CI's
//! 2 cores are shared.

use std::process::Command;

#[test]
fn a_short_soak_keeps_every_worker_and_answers_every_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-benches"))
        .args(["--soak", "--minutes", "0.2", "--workers", "60", "--clients", "12", "--tile-ms", "100"])
        .args(["--max-p99-ms", "10000", "--max-rss-mib", "2048", "--verification", "both"])
        .args(["--job-edge", "6"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| measurement | verification off | verification on | bound |"), "{stdout}");
    assert!(stdout.contains("| API errors | 0 | 0 | 0 |"), "{stdout}");
    assert!(stdout.contains("| simulated workers connected at the end | 60 | 60 | 60 |"), "{stdout}");
    assert!(stdout.contains("| tiles failed | 0 | 0 |"), "{stdout}");
}
