//! Modules that are not render jobs of a version this host speaks are
//! refused at load, with a message that says why.

use std::path::Path;

use tessera_worker::sandbox::*;
use wit_component::{dummy_module, embed_component_metadata, ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

use crate::*;

fn wit_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/wit"))
}

/// A real component for `world` in a WIT package given as text (which may
/// `include` the render world): a core module with the world's imports and
/// exports and trivial bodies, encoded like a guest.
fn component_for(extra_wit: Option<&str>, main_wit: Option<&str>, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let main = match main_wit {
        Some(src) => resolve.push_str("main.wit", src).unwrap(),
        None => resolve.push_dir(wit_dir()).unwrap().0,
    };
    let pkg = match extra_wit {
        Some(src) => resolve.push_str("extra.wit", src).unwrap(),
        None => main,
    };
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

fn render_wit_at(version: &str) -> String {
    let src = std::fs::read_to_string(wit_dir().join("render.wit")).unwrap();
    src.replace("package tessera:render@1.2.0;", &format!("package tessera:render@{version};"))
}

#[test]
fn the_shape_of_the_contract_alone_is_accepted() {
    // Control for the tests below: the same construction with the real world loads.
    let wasm = component_for(None, None, "render-job");
    let module = sandbox(test_limits()).load(&wasm).expect("a component of the real world loads");
    assert_eq!(module.contract_version(), HOST_CONTRACT);
}

#[test]
fn an_import_the_world_does_not_offer_is_refused_by_name() {
    let evil = r#"
        package tessera:evil@1.0.0;
        interface net { connect: func(host: string) -> u32; }
        world evil {
            include tessera:render/render-job@1.2.0;
            import net;
        }
    "#;
    let wasm = component_for(Some(evil), None, "evil");
    let err = sandbox(test_limits()).load(&wasm).err().expect("refused");
    assert!(matches!(&err, SandboxError::UnknownImport { name, .. } if name == "tessera:evil/net@1.0.0"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("tessera:evil/net@1.0.0") && msg.contains("tessera:render/log@1.2.0"), "{msg}");
}

#[test]
fn a_module_for_another_major_version_is_refused_naming_both() {
    let wasm = component_for(None, Some(&render_wit_at("2.0.0")), "render-job");
    let err = sandbox(test_limits()).load(&wasm).err().expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, SandboxError::ContractVersion { .. }), "{msg}");
    assert!(msg.contains("2.0.0") && msg.contains("1.2.0"), "{msg}");
}

#[test]
fn a_module_for_an_older_minor_version_loads() {
    // 1.0: the world before the `gpu` import.
    let wit = render_wit_at("1.0.0").replace("    import gpu;\n", "");
    assert!(!wit.contains("import gpu;"));
    let wasm = component_for(None, Some(&wit), "render-job");
    let module = sandbox(test_limits()).load(&wasm).expect("a 1.0 guest runs on this host");
    assert_eq!(module.contract_version().to_string(), "1.0.0");
}

#[test]
fn a_gpu_module_for_1_1_links_without_the_imports_1_2_added() {
    // 1.1: `gpu` without `advised-workgroups`. The host's `gpu@1.2.0`
    // instance must serve the guest's `gpu@1.1.0` import (load links it).
    let wit = render_wit_at("1.1.0");
    let start = wit.find("    /// How many workgroups of `entry-point`").expect("the 1.2 function's doc");
    let end =
        wit.find("advised-workgroups: func(shader: string, entry-point: string) -> u64;\n").expect("the 1.2 function")
            + "advised-workgroups: func(shader: string, entry-point: string) -> u64;\n".len();
    let wit = format!("{}{}", &wit[..start], &wit[end..]);
    assert!(!wit.contains("advised-workgroups: func") && wit.contains("dispatch: func("));
    let wasm = component_for(None, Some(&wit), "render-job");
    let module = sandbox(test_limits()).load(&wasm).expect("a 1.1 GPU guest runs on a 1.2 host");
    assert_eq!(module.contract_version().to_string(), "1.1.0");
}

#[test]
fn a_module_for_a_newer_minor_version_is_refused() {
    let wasm = component_for(None, Some(&render_wit_at("1.3.0")), "render-job");
    let err = sandbox(test_limits()).load(&wasm).err().expect("refused");
    assert!(err.to_string().contains("1.3.0"), "{err}");
}

#[test]
fn a_component_that_is_not_a_render_job_is_refused() {
    let other = r#"
        package acme:tool@0.1.0;
        interface run { go: func() -> u32; }
        world tool { export run; }
    "#;
    let wasm = component_for(Some(other), None, "tool");
    let err = sandbox(test_limits()).load(&wasm).err().expect("refused");
    assert!(matches!(&err, SandboxError::NotAJob { detail } if detail.contains("acme:tool/run@0.1.0")), "{err}");
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    let s = sandbox(test_limits());
    for (bytes, want) in [
        (&b""[..], "empty"),
        (b"glTF\x02\0\0\0 this is a scene, not a job", "magic"),
        (b"\0asm", "magic"),
        (b"\0asm\x09\0\x07\0", "unknown wasm version"),
    ] {
        let err = s.load(bytes).err().expect("refused");
        assert!(matches!(err, SandboxError::NotWasm { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
    // A core module (what rustc emits before encoding) gets a hint.
    let err = s.load(b"\0asm\x01\0\0\0").err().expect("refused");
    assert!(matches!(err, SandboxError::CoreModule), "{err}");
    assert!(err.to_string().contains("build-guests"), "{err}");
    // A truncated component fails validation, not the process.
    let good = guest("gradient");
    let err = s.load(&good[..good.len() / 2]).err().expect("refused");
    assert!(matches!(err, SandboxError::Invalid { .. }), "{err}");
    still_serves(&s);
}

#[test]
fn oversized_modules_are_refused_before_compiling() {
    let s = sandbox(Limits { max_module_bytes: 1000, ..test_limits() });
    let err = s.load(&guest("gradient")).err().expect("refused");
    assert!(matches!(err, SandboxError::ModuleTooLarge { limit: 1000, .. }), "{err}");
}

#[test]
fn a_compile_past_the_time_limit_fails_the_load() {
    let s = sandbox(Limits { compile_timeout: std::time::Duration::from_micros(1), ..test_limits() });
    let err = s.load(&guest("spheres")).err().expect("refused");
    assert!(matches!(err, SandboxError::CompileTimeout(_)), "{err}");
}
