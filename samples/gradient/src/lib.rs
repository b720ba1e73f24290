//! The smallest useful Tessera job: a gradient across the frame that shifts
//! with the frame number, with jittered samples inside each pixel.
//!
//! It shows the whole contract in a screenful: state made once in `load`,
//! per-pixel random streams from [`PixelRng`], and accumulators returned per
//! tile. The scene bytes are ignored.

use tessera_guest_sdk::{export_job, Job, JobError, JobSettings, PixelRng, SceneInfo, TileRequest, TileResult};

pub struct Gradient {
    width: f32,
    height: f32,
}

impl Job for Gradient {
    fn load(_scene: &[u8], settings: &JobSettings) -> Result<(Self, SceneInfo), JobError> {
        if settings.width == 0 || settings.height == 0 {
            return Err(JobError::InvalidSettings("width and height must be positive".into()));
        }
        let job = Gradient { width: settings.width as f32, height: settings.height as f32 };
        Ok((job, SceneInfo { frame_start: 1, frame_end: 24, ..SceneInfo::default() }))
    }

    fn render_tile(&mut self, req: &TileRequest) -> Result<TileResult, JobError> {
        let mut out = TileResult::for_request(req);
        let shift = req.frame as f32 / 24.0;
        for row in 0..req.rect.height {
            for col in 0..req.rect.width {
                let (x, y) = (req.rect.x + col, req.rect.y + row);
                let i = (row * req.rect.width + col) as usize;
                for s in req.samples.start..req.samples.start + req.samples.count {
                    let mut rng = PixelRng::new(req.seed, req.frame, x, y, s);
                    let u = (x as f32 + rng.next_f32()) / self.width;
                    let v = (y as f32 + rng.next_f32()) / self.height;
                    let rgb = [(u + shift).fract(), v, 1.0 - u];
                    out.add_sample(i, rgb, 1.0);
                }
            }
        }
        Ok(out)
    }
}

export_job!(Gradient);
