//! The camera and the pixel filter.
//!
//! Each sample picks a point inside its own pixel's filter footprint by
//! importance sampling the filter (Blackman-Harris, 1.5 px wide, as Cycles
//! uses by default) and contributes with weight 1 to that pixel only: no
//! splatting, so a pixel depends on nothing but its own samples.

use glam::{Mat4, Vec2, Vec3};

use crate::bvh::Ray;
use crate::scene::CameraDef;

#[derive(Clone, Debug)]
pub struct Camera {
    pub origin: Vec3,
    pub right: Vec3,
    pub up: Vec3,
    /// The direction the camera looks (its local −Z).
    pub forward: Vec3,
    /// tan(yfov / 2).
    pub tan_half_fov: f32,
    /// An orthographic camera's half height in scene units; 0 for a
    /// perspective camera.
    pub ortho_half_height: f32,
}

impl Camera {
    /// From a camera node's world matrix (scale is ignored) and its
    /// projection.
    pub fn from_matrix(m: &Mat4, def: &CameraDef) -> Camera {
        let (_, rot, origin) = m.to_scale_rotation_translation();
        Camera {
            origin,
            right: (rot * Vec3::X).normalize(),
            up: (rot * Vec3::Y).normalize(),
            forward: (rot * -Vec3::Z).normalize(),
            tan_half_fov: (def.yfov.clamp(1e-4, 3.1) * 0.5).tan(),
            ortho_half_height: def.ortho_half_height.unwrap_or(0.0),
        }
    }

    /// A camera looking at `target` from `origin` (+Y up).
    pub fn look_at(origin: Vec3, target: Vec3, yfov: f32) -> Camera {
        let forward = (target - origin).normalize_or(-Vec3::Z);
        let right = forward.cross(Vec3::Y).normalize_or(Vec3::X);
        let up = right.cross(forward);
        Camera { origin, right, up, forward, tan_half_fov: (yfov * 0.5).tan(), ortho_half_height: 0.0 }
    }

    /// The primary ray through film position `film` (pixels, origin top
    /// left) of a `width` × `height` image.
    pub fn ray(&self, film: Vec2, width: u32, height: u32) -> Ray {
        let aspect = width as f32 / height as f32;
        if self.ortho_half_height > 0.0 {
            // Parallel rays from the film plane through the camera's origin.
            let sx = (2.0 * film.x / width as f32 - 1.0) * self.ortho_half_height * aspect;
            let sy = (1.0 - 2.0 * film.y / height as f32) * self.ortho_half_height;
            return Ray::new(self.origin + self.right * sx + self.up * sy, self.forward);
        }
        let sx = (2.0 * film.x / width as f32 - 1.0) * self.tan_half_fov * aspect;
        let sy = (1.0 - 2.0 * film.y / height as f32) * self.tan_half_fov;
        let dir = (self.forward + self.right * sx + self.up * sy).normalize();
        Ray::new(self.origin, dir)
    }
}

/// Inverse CDF of a 1D filter, tabulated: maps a uniform number to an
/// offset from the pixel centre. Separable in x and y.
#[derive(Clone, Debug)]
pub struct FilterTable {
    table: Vec<f32>,
    width: f32,
}

const TABLE: usize = 1024;

/// Entries of a `FilterTable` (the GPU engine uploads them).
pub const FILTER_TABLE_SIZE: usize = TABLE;

impl FilterTable {
    /// Blackman-Harris over `width` pixels (total support).
    pub fn blackman_harris(width: f32) -> FilterTable {
        let f = |x: f32| {
            // x in [0, 1] across the support.
            let t = std::f64::consts::TAU * f64::from(x);
            (0.35875 - 0.48829 * t.cos() + 0.14128 * (2.0 * t).cos() - 0.01168 * (3.0 * t).cos()) as f32
        };
        // CDF by trapezoid rule on a fine grid, then inverted.
        const N: usize = 4096;
        let mut cdf = vec![0.0f64; N + 1];
        for i in 0..N {
            let a = f(i as f32 / N as f32) as f64;
            let b = f((i + 1) as f32 / N as f32) as f64;
            cdf[i + 1] = cdf[i] + 0.5 * (a + b);
        }
        let total = cdf[N];
        let mut table = Vec::with_capacity(TABLE);
        let mut j = 0;
        for i in 0..TABLE {
            let target = (i as f64 + 0.5) / TABLE as f64 * total;
            while j < N && cdf[j + 1] < target {
                j += 1;
            }
            let span = cdf[j + 1] - cdf[j];
            let frac = if span > 0.0 { (target - cdf[j]) / span } else { 0.0 };
            table.push((((j as f64 + frac) / N as f64) - 0.5) as f32 * width);
        }
        FilterTable { table, width }
    }

    /// An offset in (−width/2, width/2) distributed like the filter.
    #[inline]
    pub fn sample(&self, u: f32) -> f32 {
        let x = u * (TABLE - 1) as f32;
        let i = (x as usize).min(TABLE - 2);
        let f = x - i as f32;
        self.table[i] + (self.table[i + 1] - self.table[i]) * f
    }

    /// The tabulated inverse CDF (what `sample` interpolates), for the GPU
    /// engine, which uploads it and interpolates it the same way.
    pub fn table(&self) -> &[f32] {
        &self.table
    }

    pub fn width(&self) -> f32 {
        self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_samples_are_centred_and_inside_the_support() {
        let t = FilterTable::blackman_harris(1.5);
        assert!(t.sample(0.5).abs() < 1e-3);
        assert!(t.sample(0.0) > -0.75 && t.sample(1.0) < 0.75);
        assert!((t.sample(0.25) + t.sample(0.75)).abs() < 1e-3, "symmetric");
        // Blackman-Harris is narrow: half the samples land within ±0.17 px.
        assert!(t.sample(0.75) < 0.25);
    }

    fn perspective(yfov: f32) -> CameraDef {
        CameraDef { name: String::new(), yfov, aspect: None, ortho_half_height: None }
    }

    #[test]
    fn orthographic_rays_are_parallel_and_span_the_view() {
        let def = CameraDef { ortho_half_height: Some(2.0), ..perspective(0.7) };
        let c = Camera::from_matrix(&Mat4::from_translation(Vec3::new(0.0, 1.0, 5.0)), &def);
        // A 2:1 image: the view is 2 × 2 = 4 units high and 8 wide.
        let corner = c.ray(Vec2::new(0.0, 0.0), 100, 50);
        let centre = c.ray(Vec2::new(50.0, 25.0), 100, 50);
        for r in [corner, centre] {
            assert!((r.dir - Vec3::new(0.0, 0.0, -1.0)).length() < 1e-6, "{:?}", r.dir);
        }
        assert!((centre.origin - Vec3::new(0.0, 1.0, 5.0)).length() < 1e-6);
        assert!((corner.origin - Vec3::new(-4.0, 3.0, 5.0)).length() < 1e-5, "{:?}", corner.origin);
    }

    #[test]
    fn the_centre_ray_looks_forward() {
        let c = Camera::from_matrix(&Mat4::from_translation(Vec3::new(0.0, 1.0, 5.0)), &perspective(0.7));
        let r = c.ray(Vec2::new(50.0, 25.0), 100, 50);
        assert!((r.dir - Vec3::new(0.0, 0.0, -1.0)).length() < 1e-6);
        let top = c.ray(Vec2::new(50.0, 0.0), 100, 50);
        assert!((top.dir.y / -top.dir.z - (0.35f32).tan()).abs() < 1e-5);
    }
}
