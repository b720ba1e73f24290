//! Keyframe animation: sampling glTF channels at a time, and the node
//! transforms and morph weights that result.

use glam::{Quat, Vec3};

use super::{Scene, Trs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    Translation,
    Rotation,
    Scale,
    Weights,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Step,
    Linear,
    CubicSpline,
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub node: usize,
    pub property: Property,
    pub interpolation: Interpolation,
    pub times: Vec<f32>,
    /// Flattened outputs: per key `width` floats, ×3 (in-tangent, value,
    /// out-tangent) for cubic splines.
    pub values: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Animation {
    pub name: String,
    pub channels: Vec<Channel>,
}

impl Channel {
    /// Floats per key value (3, 4, 3, or the morph target count).
    pub fn width(&self) -> usize {
        let keys = self.times.len().max(1);
        let per_key = if self.interpolation == Interpolation::CubicSpline { 3 * keys } else { keys };
        match self.property {
            Property::Translation | Property::Scale => 3,
            Property::Rotation => 4,
            Property::Weights => self.values.len() / per_key,
        }
    }

    /// Checks the output count against the inputs.
    pub fn check(&self) -> Result<(), String> {
        if self.times.is_empty() {
            return Err("animation channel with no keyframes".into());
        }
        let per_key = if self.interpolation == Interpolation::CubicSpline { 3 } else { 1 };
        let width = self.width();
        if width == 0 || self.values.len() != self.times.len() * per_key * width {
            return Err(format!(
                "animation channel on node {} has {} output values for {} keyframes",
                self.node,
                self.values.len(),
                self.times.len()
            ));
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(format!("animation channel on node {} has non-finite values", self.node));
        }
        Ok(())
    }

    /// The channel's value at time `t` (clamped to the keyframe range).
    pub fn sample(&self, t: f32) -> Vec<f32> {
        let w = self.width();
        let n = self.times.len();
        let cubic = self.interpolation == Interpolation::CubicSpline;
        // value k, component c
        let value = |k: usize, c: usize| if cubic { self.values[(3 * k + 1) * w + c] } else { self.values[k * w + c] };
        if t <= self.times[0] || n == 1 {
            return (0..w).map(|c| value(0, c)).collect();
        }
        if t >= self.times[n - 1] {
            return (0..w).map(|c| value(n - 1, c)).collect();
        }
        let k = self.times.partition_point(|&x| x <= t) - 1;
        let (t0, t1) = (self.times[k], self.times[k + 1]);
        let dt = t1 - t0;
        let u = if dt > 0.0 { (t - t0) / dt } else { 0.0 };
        match self.interpolation {
            Interpolation::Step => (0..w).map(|c| value(k, c)).collect(),
            Interpolation::Linear if self.property == Property::Rotation => {
                let q0 = Quat::from_slice(&self.values[k * 4..k * 4 + 4]);
                let q1 = Quat::from_slice(&self.values[(k + 1) * 4..(k + 1) * 4 + 4]);
                slerp(q0, q1, u).to_array().to_vec()
            }
            Interpolation::Linear => (0..w).map(|c| value(k, c) + (value(k + 1, c) - value(k, c)) * u).collect(),
            Interpolation::CubicSpline => {
                // glTF Appendix C: Hermite spline with tangents scaled by dt.
                let (u2, u3) = (u * u, u * u * u);
                let out_tangent = |k: usize, c: usize| self.values[(3 * k + 2) * w + c];
                let in_tangent = |k: usize, c: usize| self.values[(3 * k) * w + c];
                let mut v: Vec<f32> = (0..w)
                    .map(|c| {
                        (2.0 * u3 - 3.0 * u2 + 1.0) * value(k, c)
                            + (u3 - 2.0 * u2 + u) * dt * out_tangent(k, c)
                            + (-2.0 * u3 + 3.0 * u2) * value(k + 1, c)
                            + (u3 - u2) * dt * in_tangent(k + 1, c)
                    })
                    .collect();
                if self.property == Property::Rotation {
                    let q = Quat::from_slice(&v).normalize();
                    v = q.to_array().to_vec();
                }
                v
            }
        }
    }
}

/// Spherical interpolation along the shorter arc.
fn slerp(a: Quat, b: Quat, u: f32) -> Quat {
    let b = if a.dot(b) < 0.0 { -b } else { b };
    a.slerp(b, u).normalize()
}

/// Node transforms and morph weights of the whole scene at time `t`: every
/// animation plays at once (as Blender's exporter splits one action per
/// object into several glTF animations).
pub fn pose_at(scene: &Scene, t: f32) -> (Vec<Trs>, Vec<Vec<f32>>) {
    let mut trs: Vec<Trs> = scene.nodes.iter().map(|n| n.rest).collect();
    let mut weights: Vec<Vec<f32>> = scene.nodes.iter().map(|n| n.weights.clone()).collect();
    for anim in &scene.animations {
        for ch in &anim.channels {
            let Some(node) = trs.get_mut(ch.node) else { continue };
            let v = ch.sample(t);
            match ch.property {
                Property::Translation => node.translation = Vec3::from_slice(&v),
                Property::Scale => node.scale = Vec3::from_slice(&v),
                Property::Rotation => node.rotation = Quat::from_slice(&v).normalize(),
                Property::Weights => weights[ch.node] = v,
            }
        }
    }
    (trs, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(property: Property, interpolation: Interpolation, times: Vec<f32>, values: Vec<f32>) -> Channel {
        let c = Channel { node: 0, property, interpolation, times, values };
        c.check().unwrap();
        c
    }

    #[test]
    fn linear_step_and_clamping() {
        let c = ch(Property::Translation, Interpolation::Linear, vec![0.0, 1.0], vec![0.0, 0.0, 0.0, 2.0, 4.0, 6.0]);
        assert_eq!(c.sample(0.5), vec![1.0, 2.0, 3.0]);
        assert_eq!(c.sample(-1.0), vec![0.0, 0.0, 0.0]);
        assert_eq!(c.sample(9.0), vec![2.0, 4.0, 6.0]);
        let s = ch(Property::Scale, Interpolation::Step, vec![0.0, 1.0], vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5]);
        assert_eq!(s.sample(0.99), vec![1.0, 1.0, 1.0]);
        assert_eq!(s.sample(1.0), vec![0.5, 0.5, 0.5]);
    }

    #[test]
    fn rotation_slerps() {
        let q1 = Quat::from_rotation_y(std::f32::consts::FRAC_PI_2);
        let mut values = Quat::IDENTITY.to_array().to_vec();
        values.extend(q1.to_array());
        let c = ch(Property::Rotation, Interpolation::Linear, vec![0.0, 1.0], values);
        let q = Quat::from_slice(&c.sample(0.5));
        assert!(q.angle_between(Quat::from_rotation_y(std::f32::consts::FRAC_PI_4)) < 1e-5);
    }

    #[test]
    fn cubic_spline_with_flat_tangents_eases() {
        // y: 0 → 1 with zero tangents: the midpoint is 0.5, a quarter is 0.15625.
        let values = vec![
            0.0, 0.0, 0.0, /**/ 0.0, 0.0, 0.0, /**/ 0.0, 0.0, 0.0, /**/ 0.0, 0.0, 0.0, /**/ 0.0,
            1.0, 0.0, /**/ 0.0, 0.0, 0.0,
        ];
        let c = ch(Property::Translation, Interpolation::CubicSpline, vec![0.0, 2.0], values);
        assert!((c.sample(1.0)[1] - 0.5).abs() < 1e-6);
        assert!((c.sample(0.5)[1] - 0.15625).abs() < 1e-6);
        assert_eq!(c.sample(2.0)[1], 1.0);
    }

    #[test]
    fn bad_output_counts_are_refused() {
        let c = Channel {
            node: 0,
            property: Property::Translation,
            interpolation: Interpolation::Linear,
            times: vec![0.0, 1.0],
            values: vec![0.0; 5],
        };
        assert!(c.check().is_err());
    }
}
