//! Each kind of hostile guest is stopped with an error that names what it
//! did, and the sandbox keeps serving afterwards.

use std::time::{Duration, Instant};

use tessera_worker::sandbox::*;

use crate::*;

fn render(mode: &str, limits: Limits) -> (Sandbox, JobInstance, Result<TileOutput, SandboxError>) {
    let sandbox = sandbox(limits);
    let module = sandbox.load(&guest("hostile")).expect("load");
    let mut inst = module.instantiate(&hostile_spec(mode)).expect("instantiate");
    let result = inst.render_tile(&TileRequest::new(1, rect(0, 0, 4, 4), 0, 1, 7));
    (sandbox, inst, result)
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let (sandbox, mut inst, result) = render("loop", test_limits());
    let err = result.unwrap_err();
    // 1e9 per tile + 1e6 × 16 pixels × 1 sample.
    assert!(matches!(err, SandboxError::FuelExhausted { call: "render-tile", budget: 1_016_000_000 }), "{err}");
    assert!(err.to_string().contains("fuel budget of 1016000000"), "{err}");
    assert!(inst.is_poisoned());
    assert!(matches!(inst.render_tile(&TileRequest::new(1, rect(0, 0, 4, 4), 0, 1, 7)), Err(SandboxError::Poisoned)));
    still_serves(&sandbox);
}

#[test]
fn infinite_loop_hits_the_wall_clock_backstop_without_fuel() {
    let limits = Limits { tile_timeout: Duration::from_millis(300), ..test_limits() };
    let sandbox = Sandbox::new(SandboxConfig { limits, fuel: false, ..SandboxConfig::default() }).unwrap();
    let module = sandbox.load(&guest("hostile")).unwrap();
    let mut inst = module.instantiate(&hostile_spec("loop")).unwrap();
    let started = Instant::now();
    let err = inst.render_tile(&TileRequest::new(1, rect(0, 0, 4, 4), 0, 1, 7)).unwrap_err();
    assert!(matches!(err, SandboxError::Timeout { call: "render-tile", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped after {:?}", started.elapsed());
    still_serves(&sandbox);
}

#[test]
fn a_loop_while_loading_the_scene_is_stopped() {
    let sandbox = sandbox(test_limits());
    let module = sandbox.load(&guest("hostile")).unwrap();
    let err = module.instantiate(&hostile_spec("load-loop")).err().expect("load must fail");
    assert!(matches!(err, SandboxError::FuelExhausted { call: "load-scene", budget: 2_000_000_000 }), "{err}");
    still_serves(&sandbox);
}

#[test]
fn memory_growth_past_the_limit() {
    let (sandbox, inst, result) = render("grow", test_limits());
    let err = result.unwrap_err();
    assert!(matches!(err, SandboxError::Limit { kind: LimitKind::Memory, limit, .. } if limit == 64 << 20), "{err}");
    assert!(err.to_string().contains("linear memory"), "{err}");
    assert!(inst.is_poisoned());
    still_serves(&sandbox);
}

#[test]
fn deep_recursion_overflows_the_wasm_stack() {
    let (sandbox, _, result) = render("recurse", test_limits());
    let err = result.unwrap_err();
    assert!(matches!(err, SandboxError::StackOverflow { call: "render-tile" }), "{err}");
    still_serves(&sandbox);
}

#[test]
fn deep_recursion_on_the_shadow_stack_traps() {
    // Frames that live in linear memory run off the bottom of the guest's
    // shadow stack: an out-of-bounds access, not a host stack overflow.
    let (sandbox, _, result) = render("recurse-shadow", test_limits());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, SandboxError::StackOverflow { .. })
            || matches!(&err, SandboxError::Trap { reason, .. } if reason.contains("out of bounds")),
        "{err}"
    );
    still_serves(&sandbox);
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let (sandbox, _, result) = render("panic", test_limits());
    let err = result.unwrap_err();
    let SandboxError::Trap { reason, guest_message, .. } = &err else { panic!("{err}") };
    assert!(reason.contains("unreachable"), "{reason}");
    let message = guest_message.as_deref().expect("the SDK logs the panic");
    assert!(message.contains("the hostile guest panics on purpose"), "{message}");
    assert!(err.to_string().contains("panics on purpose"), "{err}");
    still_serves(&sandbox);
}

#[test]
fn a_trap_is_reported() {
    let (sandbox, _, result) = render("trap", test_limits());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Trap { reason, guest_message: None, .. } if reason.contains("unreachable")),
        "{err}"
    );
    still_serves(&sandbox);
}

#[test]
fn output_of_the_wrong_shape_is_refused() {
    let (_, inst, result) = render("big-output", test_limits());
    let err = result.unwrap_err();
    assert!(matches!(err, SandboxError::BadOutput(_)), "{err}");
    assert!(err.to_string().contains("color has 4144 floats, expected 48"), "{err}");
    // A malformed result is the guest's answer, not a trap: the instance lives.
    assert!(!inst.is_poisoned());
}

#[test]
fn output_larger_than_allowed_is_refused() {
    let limits = Limits { max_output_bytes: 16 << 20, ..test_limits() };
    let (sandbox, _, result) = render("huge-output", limits);
    let err = result.unwrap_err();
    assert!(
        matches!(err, SandboxError::OutputTooLarge { limit, bytes } if limit == 16 << 20 && bytes > 32 << 20),
        "{err}"
    );
    still_serves(&sandbox);
}

#[test]
fn log_floods_are_capped() {
    let limits = Limits { max_log_lines_per_call: 50, max_log_line_bytes: 100, ..test_limits() };
    let (_, mut inst, result) = render("log-flood", limits);
    result.expect("logging too much is not an error");
    let logs = inst.take_logs();
    assert_eq!(logs.len(), 51);
    assert!(logs[..50].iter().all(|l| l.message.len() <= 100 + "…".len()));
    assert!(logs[50].message.starts_with("1950 more log lines dropped"), "{}", logs[50].message);
}

#[test]
fn nans_in_the_output_are_made_canonical() {
    let (_, _, result) = render("nan", test_limits());
    let out = result.unwrap();
    assert_eq!(out.nans, 48);
    assert!(out.accumulators.color.iter().all(|c| c.to_bits() == 0x7fc0_0000));
}

#[test]
fn a_job_error_is_the_guests_answer_not_a_crash() {
    let sandbox = sandbox(test_limits());
    let module = sandbox.load(&guest("gradient")).unwrap();
    let spec = JobSpec::new(Vec::new(), JobSettings::new(0, 10));
    let err = module.instantiate(&spec).err().expect("width 0 is refused");
    assert!(matches!(&err, SandboxError::Job(GuestJobError::InvalidSettings(m)) if m.contains("positive")), "{err}");
    assert!(!err.poisons_instance());
}

#[test]
fn the_host_serves_others_while_a_guest_spins() {
    let limits = Limits { tile_timeout: Duration::from_secs(3), ..test_limits() };
    let sandbox = Sandbox::new(SandboxConfig { limits, fuel: false, ..SandboxConfig::default() }).unwrap();
    let spinner = {
        let sandbox = sandbox.clone();
        std::thread::spawn(move || {
            let module = sandbox.load(&guest("hostile")).unwrap();
            let mut inst = module.instantiate(&hostile_spec("loop")).unwrap();
            inst.render_tile(&TileRequest::new(1, rect(0, 0, 4, 4), 0, 1, 7))
        })
    };
    let module = sandbox.load(&guest("gradient")).unwrap();
    let mut inst = module.instantiate(&JobSpec::new(Vec::new(), JobSettings::new(32, 32))).unwrap();
    for y in 0..4 {
        let out = inst.render_tile(&TileRequest::new(1, rect(0, y * 8, 32, 8), 0, 4, 3)).unwrap();
        assert_eq!(out.accumulators.weight, vec![4.0; 256]);
    }
    let err = spinner.join().unwrap().unwrap_err();
    assert!(matches!(err, SandboxError::Timeout { .. }), "{err}");
}
