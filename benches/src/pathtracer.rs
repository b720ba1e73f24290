//! The path tracer on the sample scenes: paths (camera samples) per second
//! on one core, natively and as wasm in the sandbox, and their ratio.

use std::path::Path;

use anyhow::{anyhow, Result};
use pathtracer::PathTracer;
use tessera_guest_sdk::{
    AovSet, Job, JobSettings as SdkSettings, Rect as SdkRect, SampleRange, TileRequest as SdkRequest,
};
use tessera_worker::sandbox::*;

use crate::{median_per_iter, Effort, Row};

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let wasm = tessera_guest_build::guest("pathtracer")?;
    let (rounds, spp, size) = match effort {
        Effort::Quick => (1, 1, 16),
        Effort::Full => (7, 8, 64),
    };
    let scenes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes");
    let mut rows = Vec::new();
    for (name, frame, w, h) in [("cornell.gltf", 1, 256u32, 256u32), ("turntable.glb", 12, 384, 216)] {
        let bytes = std::fs::read(scenes.join(name))?;
        let paths = f64::from(size * size * spp);
        let rect = (w / 2 - size / 2, h / 2 - size / 2);

        let (mut job, _) =
            PathTracer::load(&bytes, &SdkSettings { width: w, height: h, fps: 24.0, extra: "{}".into() })
                .map_err(|e| anyhow!("{e:?}"))?;
        let req = SdkRequest {
            frame,
            rect: SdkRect { x: rect.0, y: rect.1, width: size, height: size },
            samples: SampleRange { start: 0, count: spp },
            seed: 1,
            aovs: AovSet::empty(),
        };
        job.render_tile(&req).map_err(|e| anyhow!("{e:?}"))?;
        let native = median_per_iter(rounds, 1, || {
            std::hint::black_box(job.render_tile(&req).expect("native tile"));
        });
        let native_rate = paths / native.as_secs_f64();
        rows.push(Row {
            name: format!("pathtracer {name}, native"),
            value: format!("{:.0} paths/s", native_rate),
            note: format!("{size}×{size} px × {spp} spp tile, 1 core"),
        });

        for (label, config) in [
            ("wasm, fuel + epoch (default)", SandboxConfig::default()),
            ("wasm, plain", SandboxConfig { fuel: false, epoch_backstop: false, ..SandboxConfig::default() }),
        ] {
            let module = Sandbox::new(config)?.load(&wasm)?;
            let spec = JobSpec::new(bytes.clone(), JobSettings::new(w, h));
            let mut inst = module.instantiate(&spec)?;
            let req = TileRequest::new(frame, Rect { x: rect.0, y: rect.1, width: size, height: size }, 0, spp, 1);
            inst.render_tile(&req)?;
            let t = median_per_iter(rounds, 1, || {
                std::hint::black_box(inst.render_tile(&req).expect("wasm tile"));
            });
            let rate = paths / t.as_secs_f64();
            rows.push(Row {
                name: format!("pathtracer {name}, {label}"),
                value: format!("{:.0} paths/s", rate),
                note: format!("{:.2}× native time", native_rate / rate),
            });
        }
    }
    Ok(rows)
}
