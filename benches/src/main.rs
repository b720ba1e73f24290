//! Tessera's benchmarks. `cargo xtask bench` runs them in the release
//! profile and prints a Markdown table (copied into BENCHMARKS.md).
//!
//! `--quick` runs each measurement briefly (for a smoke run, not figures);
//! `--only sandbox|pathtracer|scheduler|farm|store|proof|gpu|denoise` runs one group.

mod denoise;
mod farm;
mod gpu;
mod pathtracer;
mod proof;
mod sandbox;
mod scheduler;
mod soak;
mod store;

use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sim-workers") {
        return farm::sim_workers_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--memory-probe") {
        return farm::memory_probe_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--api-clients") {
        return soak::api_clients_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--soak") {
        // The coordinator's warnings (a worker dropped, a failed write) go
        // to stderr; `RUST_LOG` widens them.
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
        let soak_args = soak::SoakArgs::parse(&args[2..])?;
        let report = soak::run(&soak_args)?;
        return soak::check(&soak_args, &report);
    }
    let only: Option<String> = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1).cloned());
    let quick = std::env::args().any(|a| a == "--quick");
    let effort = if quick { Effort::Quick } else { Effort::Full };
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut rows = Vec::new();
    if want("sandbox") {
        rows.extend(sandbox::run(effort)?);
    }
    if want("pathtracer") {
        rows.extend(pathtracer::run(effort)?);
    }
    if want("scheduler") {
        rows.extend(scheduler::run(effort)?);
    }
    if want("farm") {
        rows.extend(farm::run(effort)?);
    }
    if want("store") {
        rows.extend(store::run(effort)?);
    }
    if want("proof") {
        rows.extend(proof::run(effort)?);
    }
    if want("gpu") {
        rows.extend(gpu::run(effort)?);
    }
    if want("denoise") {
        rows.extend(denoise::run(effort)?);
    }
    print_table(&rows);
    Ok(())
}

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    Quick,
    Full,
}

/// One line of the table.
pub struct Row {
    pub name: String,
    pub value: String,
    pub note: String,
}

fn print_table(rows: &[Row]) {
    println!("| measurement | result | notes |");
    println!("| --- | ---: | --- |");
    for r in rows {
        println!("| {} | {} | {} |", r.name, r.value, r.note);
    }
}

/// Runs `f` `iters` times per round for `rounds` rounds and returns the
/// median time per iteration: robust to a noisy neighbour on a shared box.
pub fn median_per_iter(rounds: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters.max(1) {
                f();
            }
            t.elapsed() / iters.max(1) as u32
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Formats a duration with a unit that suits it.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quick_bench_runs_and_fills_the_table() {
        let rows = super::sandbox::run(super::Effort::Quick).expect("bench");
        assert!(rows.len() >= 10, "{} rows", rows.len());
        assert!(rows.iter().any(|r| r.name.contains("strict-NaN")));
        let rows = super::pathtracer::run(super::Effort::Quick).expect("path tracer bench");
        assert_eq!(rows.len(), 6);
        let rows = super::scheduler::run(super::Effort::Quick).expect("scheduler bench");
        assert!(rows[0].value.ends_with("events/s"));
    }
}
