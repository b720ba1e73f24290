//! Bounding volume hierarchies: a binned-SAH build over boxes, and the
//! triangle and instance traversals built on it.
//!
//! The build is deterministic: same input order → same tree (no hashing, no
//! threads, ties broken by the lowest axis and bin), so every worker
//! traverses the same tree and a pixel's value cannot depend on the machine.

use glam::{Mat4, Vec3};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aabb {
    pub min: Vec3,
    pub max: Vec3,
}

impl Aabb {
    pub const EMPTY: Aabb = Aabb { min: Vec3::splat(f32::INFINITY), max: Vec3::splat(f32::NEG_INFINITY) };

    pub fn grow(&mut self, p: Vec3) {
        self.min = self.min.min(p);
        self.max = self.max.max(p);
    }

    pub fn union(&self, o: &Aabb) -> Aabb {
        Aabb { min: self.min.min(o.min), max: self.max.max(o.max) }
    }

    pub fn area(&self) -> f32 {
        let d = (self.max - self.min).max(Vec3::ZERO);
        2.0 * (d.x * d.y + d.y * d.z + d.z * d.x)
    }

    pub fn is_empty(&self) -> bool {
        self.min.x > self.max.x
    }

    /// The box containing this one transformed by `m`.
    pub fn transformed(&self, m: &Mat4) -> Aabb {
        let mut out = Aabb::EMPTY;
        if self.is_empty() {
            return out;
        }
        for i in 0..8 {
            let c = Vec3::new(
                if i & 1 == 0 { self.min.x } else { self.max.x },
                if i & 2 == 0 { self.min.y } else { self.max.y },
                if i & 4 == 0 { self.min.z } else { self.max.z },
            );
            out.grow(m.transform_point3(c));
        }
        out
    }
}

/// A flattened node. Leaves have `count > 0` and own primitives
/// `first .. first + count` of the reordered primitive list; interior nodes
/// have children `first` and `first + 1`.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub bounds: Aabb,
    pub first: u32,
    pub count: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Bvh {
    pub nodes: Vec<Node>,
    /// Primitive indices in leaf order.
    pub order: Vec<u32>,
}

const BINS: usize = 12;
const MAX_LEAF: usize = 4;

impl Bvh {
    /// Builds over primitives with the given boxes (centroid = box centre).
    pub fn build(boxes: &[Aabb]) -> Bvh {
        let mut order: Vec<u32> = (0..boxes.len() as u32).collect();
        let mut nodes = Vec::with_capacity(boxes.len().max(1) * 2);
        let root_bounds = boxes.iter().fold(Aabb::EMPTY, |a, b| a.union(b));
        nodes.push(Node { bounds: root_bounds, first: 0, count: boxes.len() as u32 });
        if boxes.is_empty() {
            return Bvh { nodes, order };
        }
        let centroid = |i: u32| {
            let b = &boxes[i as usize];
            (b.min + b.max) * 0.5
        };
        // (node index, start, end) still to split.
        let mut work = vec![(0usize, 0usize, boxes.len())];
        while let Some((ni, start, end)) = work.pop() {
            let count = end - start;
            if count <= MAX_LEAF.min(2) {
                continue;
            }
            let mut cb = Aabb::EMPTY;
            for &p in &order[start..end] {
                cb.grow(centroid(p));
            }
            let extent = cb.max - cb.min;
            let leaf_cost = count as f32;
            let parent_area = nodes[ni].bounds.area().max(f32::MIN_POSITIVE);

            // Best split over all three axes, binned.
            let mut best: Option<(f32, usize, usize)> = None; // cost, axis, bin boundary
            for axis in 0..3 {
                if extent[axis] <= 0.0 {
                    continue;
                }
                let mut bin_box = [Aabb::EMPTY; BINS];
                let mut bin_count = [0usize; BINS];
                let scale = BINS as f32 / extent[axis];
                let bin_of = |p: u32| (((centroid(p)[axis] - cb.min[axis]) * scale) as usize).min(BINS - 1);
                for &p in &order[start..end] {
                    let b = bin_of(p);
                    bin_count[b] += 1;
                    bin_box[b] = bin_box[b].union(&boxes[p as usize]);
                }
                let mut right_area = [0.0f32; BINS];
                let mut right_count = [0usize; BINS];
                let (mut acc, mut n) = (Aabb::EMPTY, 0);
                for b in (1..BINS).rev() {
                    acc = acc.union(&bin_box[b]);
                    n += bin_count[b];
                    right_area[b] = acc.area();
                    right_count[b] = n;
                }
                let (mut acc, mut n) = (Aabb::EMPTY, 0);
                for b in 1..BINS {
                    acc = acc.union(&bin_box[b - 1]);
                    n += bin_count[b - 1];
                    if n == 0 || right_count[b] == 0 {
                        continue;
                    }
                    let cost = 0.125 + (acc.area() * n as f32 + right_area[b] * right_count[b] as f32) / parent_area;
                    if best.is_none_or(|(c, _, _)| cost < c) {
                        best = Some((cost, axis, b));
                    }
                }
            }

            let mid = match best {
                Some((cost, axis, bin)) if cost < leaf_cost || count > MAX_LEAF => {
                    let scale = BINS as f32 / extent[axis];
                    let (left, right): (Vec<u32>, Vec<u32>) = order[start..end]
                        .iter()
                        .partition(|&&p| ((((centroid(p)[axis] - cb.min[axis]) * scale) as usize).min(BINS - 1)) < bin);
                    let m = start + left.len();
                    order[start..m].copy_from_slice(&left);
                    order[m..end].copy_from_slice(&right);
                    m
                }
                None if count > MAX_LEAF => start + count / 2, // all centroids equal: split in the middle
                _ => continue,
            };
            let bounds_of = |range: &[u32]| range.iter().fold(Aabb::EMPTY, |a, &p| a.union(&boxes[p as usize]));
            let left = nodes.len();
            nodes.push(Node {
                bounds: bounds_of(&order[start..mid]),
                first: start as u32,
                count: (mid - start) as u32,
            });
            nodes.push(Node { bounds: bounds_of(&order[mid..end]), first: mid as u32, count: (end - mid) as u32 });
            nodes[ni].first = left as u32;
            nodes[ni].count = 0;
            // Push right first so the left subtree is finished first: the
            // order of `nodes` is then a fixed function of the input.
            work.push((left + 1, mid, end));
            work.push((left, start, mid));
        }
        Bvh { nodes, order }
    }

    pub fn bounds(&self) -> Aabb {
        self.nodes[0].bounds
    }
}

/// A ray with precomputed reciprocal direction.
#[derive(Clone, Copy, Debug)]
pub struct Ray {
    pub origin: Vec3,
    pub dir: Vec3,
    pub inv_dir: Vec3,
}

impl Ray {
    pub fn new(origin: Vec3, dir: Vec3) -> Ray {
        Ray { origin, dir, inv_dir: dir.recip() }
    }
}

/// `a < b ? a : b`: a compare and a select. `f32::min` must also order
/// NaNs, which costs several instructions in wasm, where this test is the
/// hottest code of the renderer.
#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Distance at which the ray enters `b`, if it does before `t_max`.
#[inline]
pub fn hit_box(ray: &Ray, b: &Aabb, t_max: f32) -> Option<f32> {
    let (o, inv) = (ray.origin, ray.inv_dir);
    let (x0, x1) = ((b.min.x - o.x) * inv.x, (b.max.x - o.x) * inv.x);
    let (y0, y1) = ((b.min.y - o.y) * inv.y, (b.max.y - o.y) * inv.y);
    let (z0, z1) = ((b.min.z - o.z) * inv.z, (b.max.z - o.z) * inv.z);
    let near = fmax(fmax(fmin(x0, x1), fmin(y0, y1)), fmax(fmin(z0, z1), 0.0));
    let far = fmin(fmin(fmax(x0, x1), fmax(y0, y1)), fmin(fmax(z0, z1), t_max));
    // NaN (0 × ∞ on a slab boundary) compares false: treated as a miss.
    (near <= far).then_some(near)
}

/// Visits leaves front to back; `leaf(first, count, t_max) -> new t_max`
/// (return a negative value to stop at once).
#[inline]
pub fn traverse(bvh: &Bvh, ray: &Ray, mut t_max: f32, mut leaf: impl FnMut(u32, u32, f32) -> f32) -> f32 {
    let mut stack = [0u32; 64];
    let mut sp = 0usize;
    // An empty tree (a mesh whose primitives have no whole triangle) is a
    // root of count 0 with empty bounds, which `hit_box` does not reject
    // (−∞..∞ slabs): without this, the root reads as an interior node with
    // children that do not exist (found by fuzzing).
    if bvh.order.is_empty() {
        return t_max;
    }
    if hit_box(ray, &bvh.nodes[0].bounds, t_max).is_none() {
        return t_max;
    }
    let mut node = 0usize;
    loop {
        let n = &bvh.nodes[node];
        if n.count > 0 {
            t_max = leaf(n.first, n.count, t_max);
            if t_max < 0.0 {
                return t_max;
            }
        } else {
            let (a, b) = (n.first as usize, n.first as usize + 1);
            let ha = hit_box(ray, &bvh.nodes[a].bounds, t_max);
            let hb = hit_box(ray, &bvh.nodes[b].bounds, t_max);
            match (ha, hb) {
                (Some(ta), Some(tb)) => {
                    let (near, far) = if ta <= tb { (a, b) } else { (b, a) };
                    if sp < stack.len() {
                        stack[sp] = far as u32;
                        sp += 1;
                    }
                    node = near;
                    continue;
                }
                (Some(_), None) => {
                    node = a;
                    continue;
                }
                (None, Some(_)) => {
                    node = b;
                    continue;
                }
                (None, None) => {}
            }
        }
        if sp == 0 {
            return t_max;
        }
        sp -= 1;
        node = stack[sp] as usize;
    }
}

/// Möller–Trumbore: (t, u, v, back-facing) of a hit in (1e-7·scale, t_max).
#[inline]
pub fn hit_triangle(ray: &Ray, v: &[Vec3; 3], t_max: f32) -> Option<(f32, f32, f32, bool)> {
    let e1 = v[1] - v[0];
    let e2 = v[2] - v[0];
    let p = ray.dir.cross(e2);
    let det = e1.dot(p);
    if det.abs() < 1e-12 {
        return None;
    }
    let inv = 1.0 / det;
    let s = ray.origin - v[0];
    let u = s.dot(p) * inv;
    if !(0.0..=1.0).contains(&u) {
        return None;
    }
    let q = s.cross(e1);
    let w = ray.dir.dot(q) * inv;
    if w < 0.0 || u + w > 1.0 {
        return None;
    }
    let t = e2.dot(q) * inv;
    (t > 0.0 && t < t_max).then_some((t, u, w, det < 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_boxes(n: usize) -> Vec<Aabb> {
        (0..n)
            .map(|i| {
                let c = Vec3::new((i * 7 % 13) as f32, (i * 3 % 5) as f32, (i % 17) as f32);
                Aabb { min: c, max: c + Vec3::splat(0.5) }
            })
            .collect()
    }

    #[test]
    fn every_primitive_is_in_exactly_one_leaf_and_inside_its_boxes() {
        let boxes = unit_boxes(1000);
        let bvh = Bvh::build(&boxes);
        let mut seen = vec![0; boxes.len()];
        let mut stack = vec![(0usize, bvh.nodes[0].bounds)];
        while let Some((n, parent)) = stack.pop() {
            let node = bvh.nodes[n];
            assert!(parent.min.cmple(node.bounds.min).all() && node.bounds.max.cmple(parent.max).all());
            if node.count > 0 {
                for &p in &bvh.order[node.first as usize..(node.first + node.count) as usize] {
                    seen[p as usize] += 1;
                    let b = boxes[p as usize];
                    assert!(node.bounds.min.cmple(b.min).all() && b.max.cmple(node.bounds.max).all());
                }
            } else {
                stack.push((node.first as usize, node.bounds));
                stack.push((node.first as usize + 1, node.bounds));
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    #[test]
    fn the_build_is_deterministic_and_handles_degenerate_input() {
        let boxes = unit_boxes(500);
        let a = Bvh::build(&boxes);
        let b = Bvh::build(&boxes);
        assert_eq!(a.order, b.order);
        assert_eq!(a.nodes.len(), b.nodes.len());
        let same = vec![Aabb { min: Vec3::ZERO, max: Vec3::ONE }; 100];
        let bvh = Bvh::build(&same);
        assert!(bvh.nodes.iter().all(|n| n.count <= 4));
        assert_eq!(Bvh::build(&[]).nodes.len(), 1);
    }

    #[test]
    fn triangle_hits() {
        let tri = [Vec3::new(0.0, 0.0, 0.0), Vec3::new(1.0, 0.0, 0.0), Vec3::new(0.0, 1.0, 0.0)];
        let front = Ray::new(Vec3::new(0.2, 0.2, 1.0), Vec3::new(0.0, 0.0, -1.0));
        let (t, u, v, back) = hit_triangle(&front, &tri, 10.0).unwrap();
        assert!((t - 1.0).abs() < 1e-6 && (u - 0.2).abs() < 1e-6 && (v - 0.2).abs() < 1e-6 && !back);
        let behind = Ray::new(Vec3::new(0.2, 0.2, -1.0), Vec3::new(0.0, 0.0, 1.0));
        assert!(hit_triangle(&behind, &tri, 10.0).unwrap().3);
        assert!(hit_triangle(&front, &tri, 0.5).is_none());
        let miss = Ray::new(Vec3::new(0.8, 0.8, 1.0), Vec3::new(0.0, 0.0, -1.0));
        assert!(hit_triangle(&miss, &tri, 10.0).is_none());
    }
}
