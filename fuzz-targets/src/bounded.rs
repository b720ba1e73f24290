//! A bounded mutational fuzzer on the stable toolchain: what CI runs on
//! every build (cargo-fuzz needs nightly, which CI does not have).
//!
//! Why not only cargo-fuzz: the point of a fuzz target is that it keeps
//! passing, and only a run in CI notices when a change breaks that. This
//! fuzzer has no coverage instrumentation; it mutates seeds (byte flips,
//! interesting bytes, truncations, insertions, splices, length fields and
//! decimal numbers set to edge values) from a fixed-seed PRNG, so a failure
//! reproduces from the seed and the count, and it keeps an input whose
//! outcome ([`Target::run`]'s description) it had not seen before, which
//! steers it a little past the first checks. A panic is caught, the input
//! written to `target/fuzz-failures/`, and the run reports it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Target;

/// The deterministic PRNG (splitmix64): the same seed gives the same run.
pub use tessera_test_support::Rng;

const INTERESTING_U32: &[u32] =
    &[0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "65536",
    "2147483647",
    "-2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "1e309",
    "-0",
    "0.5",
    "99999999999999999999999",
    "3",
];

/// One random change to `data`; `other` is another corpus entry to splice.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    match rng.index(10) {
        // Flip a bit.
        0 if !data.is_empty() => {
            let i = rng.index(data.len());
            data[i] ^= 1 << rng.index(8);
        }
        // An interesting byte.
        1 if !data.is_empty() => {
            let i = rng.index(data.len());
            data[i] = [0u8, 0xff, 0x7f, 0x80, b'{', b'"', b',', b'-', b'.', b'/'][rng.index(10)];
        }
        // Truncate.
        2 if !data.is_empty() => {
            let n = rng.index(data.len());
            data.truncate(n);
        }
        // Delete a range.
        3 if data.len() > 1 => {
            let a = rng.index(data.len());
            let b = (a + 1 + rng.index(16.min(data.len() - a))).min(data.len());
            data.drain(a..b);
        }
        // Insert random bytes.
        4 => {
            let i = rng.index(data.len() + 1);
            let n = 1 + rng.index(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(i..i, bytes);
        }
        // Duplicate a range (repeats, nesting).
        5 if !data.is_empty() => {
            let a = rng.index(data.len());
            let b = (a + 1 + rng.index(64)).min(data.len());
            let copy = data[a..b].to_vec();
            let at = rng.index(data.len() + 1);
            data.splice(at..at, copy);
        }
        // Splice in a piece of another input.
        6 if !other.is_empty() => {
            let a = rng.index(other.len());
            let b = (a + 1 + rng.index(256)).min(other.len());
            let at = rng.index(data.len() + 1);
            let end = (at + rng.index(256)).min(data.len());
            data.splice(at..end, other[a..b].iter().copied());
        }
        // A length field: an interesting u32, little or big endian, or a
        // varint (postcard's lengths).
        7 if data.len() >= 4 => {
            let i = rng.index(data.len() - 3);
            let v = INTERESTING_U32[rng.index(INTERESTING_U32.len())];
            match rng.index(3) {
                0 => data[i..i + 4].copy_from_slice(&v.to_le_bytes()),
                1 => data[i..i + 4].copy_from_slice(&v.to_be_bytes()),
                _ => {
                    let mut varint = Vec::new();
                    let mut v = u64::from(v) << rng.index(33);
                    loop {
                        let byte = (v & 0x7f) as u8;
                        v >>= 7;
                        if v == 0 {
                            varint.push(byte);
                            break;
                        }
                        varint.push(byte | 0x80);
                    }
                    data.splice(i..i + 1, varint);
                }
            }
        }
        // A decimal number in text (JSON, frame lists) set to an edge value.
        8 if !data.is_empty() => {
            let start = rng.index(data.len());
            if let Some(off) = data[start..].iter().position(u8::is_ascii_digit) {
                let a = start + off;
                let b = a + data[a..].iter().take_while(|c| c.is_ascii_digit() || **c == b'.').count();
                let n = INTERESTING_NUMBERS[rng.index(INTERESTING_NUMBERS.len())];
                data.splice(a..b, n.bytes());
            }
        }
        // Swap two ranges' bytes (reorders fields, indices).
        _ if data.len() > 8 => {
            let n = 1 + rng.index(4);
            let a = rng.index(data.len() - n);
            let b = rng.index(data.len() - n);
            for k in 0..n {
                data.swap(a + k, b + k);
            }
        }
        _ => data.push(rng.next_u64() as u8),
    }
}

/// What a bounded run did.
#[derive(Debug)]
pub struct Report {
    pub target: Target,
    pub executions: u64,
    pub elapsed: Duration,
    /// Distinct outcomes seen (a rough measure of how far it got).
    pub outcomes: usize,
    /// Inputs that panicked, as (file written, panic message).
    pub failures: Vec<(PathBuf, String)>,
}

impl Report {
    pub fn execs_per_sec(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Largest input the fuzzer grows to: big enough for the seeds, small
/// enough that each execution stays fast.
const MAX_INPUT: usize = 256 * 1024;
/// Most inputs kept for new outcomes.
const MAX_POOL: usize = 2048;

/// Runs every seed, then mutated inputs until `budget` has passed. Panics
/// are caught and collected (input saved under `failure_dir`); the run
/// goes on so one report names every distinct failure found.
pub fn run(target: Target, seeds: Vec<Vec<u8>>, budget: Duration, seed: u64, failure_dir: &std::path::Path) -> Report {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut pool: Vec<Vec<u8>> = seeds;
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let mut failed_messages = std::collections::HashSet::new();
    let mut executions = 0u64;
    let mut exec = |input: &[u8], pool: &mut Vec<Vec<u8>>, keep: bool| {
        executions += 1;
        match catch_unwind(AssertUnwindSafe(|| target.run(input))) {
            Ok(outcome) => {
                if seen.insert(outcome) && keep && pool.len() < MAX_POOL {
                    pool.push(input.to_vec());
                }
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".into());
                if failed_messages.insert(message.clone()) {
                    let _ = std::fs::create_dir_all(failure_dir);
                    let hash = fnv1a(input);
                    let path = failure_dir.join(format!("{}-{hash:016x}.bin", target.name()));
                    let _ = std::fs::write(&path, input);
                    failures.push((path, message));
                }
            }
        }
    };
    for input in pool.clone() {
        exec(&input, &mut pool, false);
    }
    while started.elapsed() < budget {
        let base = pool[rng.index(pool.len())].clone();
        let other = pool[rng.index(pool.len())].clone();
        let mut input = base;
        // Mostly mutate from the seeds themselves, so each input stays near
        // a valid one; stack a few changes.
        for _ in 0..1 + rng.index(4) {
            mutate(&mut rng, &mut input, &other);
        }
        input.truncate(MAX_INPUT);
        exec(&input, &mut pool, true);
        // Pure random bytes now and then.
        if rng.index(64) == 0 {
            let n = rng.index(512);
            let random: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            exec(&random, &mut pool, false);
        }
    }
    Report { target, executions, elapsed: started.elapsed(), outcomes: seen.len(), failures }
}

/// A stable 64-bit hash (FNV-1a) to name a failing input's file.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
