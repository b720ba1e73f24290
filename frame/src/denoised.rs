//! The denoised image of a frame: the frame's mean colour and guides
//! through `tessera-denoise`, which is deterministic CPU code, so the
//! denoised image is reproducible from the same accumulators anywhere.
//! The raw frame is always kept beside it: it is what proofs cover.

use super::FrameBuffer;

pub use tessera_denoise::{DenoiseError, ALGORITHM};

impl FrameBuffer {
    /// Means of a summed plane of `channels` floats a pixel (`sum / weight`,
    /// zero where nothing landed), in the order `pixel` divides.
    pub(super) fn means(&self, sums: &[f32], channels: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; sums.len()];
        for (i, &w) in self.weight.iter().enumerate() {
            if w > 0.0 {
                for c in 0..channels {
                    out[channels * i + c] = sums[channels * i + c] / w;
                }
            }
        }
        out
    }

    /// This frame denoised, as a frame whose pixels have weight 1 (so it
    /// writes through the same PNG and EXR paths). Uses the guides when the
    /// frame has them ([`FrameBuffer::with_guides`]); without them the
    /// filter is guided by the image alone and blurs textures more.
    pub fn denoised(&self) -> Result<FrameBuffer, DenoiseError> {
        let color = self.means(&self.color, 3);
        let guides = self.guides.as_ref().map(|g| (self.means(&g.albedo, 3), self.means(&g.normal, 3)));
        let frame = tessera_denoise::Frame {
            width: self.width as usize,
            height: self.height as usize,
            color: &color,
            albedo: guides.as_ref().map(|g| g.0.as_slice()),
            normal: guides.as_ref().map(|g| g.1.as_slice()),
            variance: None,
        };
        let color = tessera_denoise::denoise(&frame, &tessera_denoise::Settings::default())?;
        let n = self.weight.len();
        Ok(FrameBuffer { width: self.width, height: self.height, color, weight: vec![1.0; n], guides: None })
    }
}
