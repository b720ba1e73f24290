// Tessera's path tracer on the GPU: a port of camera.rs, sampler.rs (and
// the SDK's PixelRng), bvh.rs/frame.rs traversal, shade.rs, bsdf.rs and
// integrator.rs. One invocation traces one sample of one pixel.
//
// The arithmetic follows the Rust code operation by operation (glam's
// order of additions, `normalize` as `v * (1 / length)`, `powi` as
// repeated squaring, compare-and-select min/max) so that results differ
// from the CPU's by float rounding only. The layout constants (P_*, R_*)
// are prepended by mod.rs.

@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read> TX: array<u32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
// Per pixel of the tile, ACC_WORDS floats of totals then as many of the
// current sample block's (`reduce`).
@group(0) @binding(4) var<storage, read_write> ACC: array<f32>;

const PI: f32 = 3.14159265358979323846;
const TAU: f32 = 6.28318530717958647692;
const FRAC_1_PI: f32 = 0.318309886183790671537767526745028724;
const MIN_ALPHA: f32 = 1e-3;
const SOBOL_PAIRS: u32 = 12u;
// 1.0f32 - 1e-3f32, exactly.
const SHADOW_SHRINK: f32 = 0.999;

// ---- data access ----

fn sf(i: u32) -> f32 { return bitcast<f32>(S[i]); }
fn sv3(i: u32) -> vec3<f32> { return vec3<f32>(sf(i), sf(i + 1u), sf(i + 2u)); }
fn pf(i: u32) -> f32 { return bitcast<f32>(P[i]); }
fn pv3(i: u32) -> vec3<f32> { return vec3<f32>(pf(i), pf(i + 1u), pf(i + 2u)); }
fn inf() -> f32 { return pf(P_INF); }
fn is_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }

// ---- glam's operations, in its order ----

fn dot3(a: vec3<f32>, b: vec3<f32>) -> f32 { return a.x * b.x + a.y * b.y + a.z * b.z; }
fn cross3(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(a.y * b.z - b.y * a.z, a.z * b.x - b.z * a.x, a.x * b.y - b.x * a.y);
}
fn length3(v: vec3<f32>) -> f32 { return sqrt(dot3(v, v)); }
fn normalize3(v: vec3<f32>) -> vec3<f32> { return v * (1.0 / length3(v)); }
fn normalize_or(v: vec3<f32>, fallback: vec3<f32>) -> vec3<f32> {
    let rcp = 1.0 / length3(v);
    if (is_finite(rcp) && rcp > 0.0) { return v * rcp; }
    return fallback;
}
// `if a > b { a } else { b }`, as `max_element` and bvh.rs's fmax.
fn fmax(a: f32, b: f32) -> f32 { return select(b, a, a > b); }
fn fmin(a: f32, b: f32) -> f32 { return select(b, a, a < b); }
fn max_el(v: vec3<f32>) -> f32 { return fmax(v.x, fmax(v.y, v.z)); }
// f32::max / min / clamp (the NaN cases aside).
fn rmax(a: f32, b: f32) -> f32 { return max(a, b); }
fn pow5(x: f32) -> f32 { let x2 = x * x; return x * (x2 * x2); }
fn pow4(x: f32) -> f32 { let x2 = x * x; return x2 * x2; }
fn luminance(c: vec3<f32>) -> f32 { return 0.2126 * c.x + 0.7152 * c.y + 0.0722 * c.z; }
// f32::signum: ±1 by the sign bit (+0 → 1, −0 → −1).
fn signum(x: f32) -> f32 { return select(1.0, -1.0, (bitcast<u32>(x) & 0x80000000u) != 0u); }

// Mat4::transform_point3 / transform_vector3 on an affine record at `at`
// (columns x, y, z, w as 3 words each).
fn xf_point(at: u32, p: vec3<f32>) -> vec3<f32> {
    var r = sv3(at) * p.x;
    r = sv3(at + 3u) * p.y + r;
    r = sv3(at + 6u) * p.z + r;
    return sv3(at + 9u) + r;
}
fn xf_vector(at: u32, v: vec3<f32>) -> vec3<f32> {
    var r = sv3(at) * v.x;
    r = sv3(at + 3u) * v.y + r;
    r = sv3(at + 6u) * v.z + r;
    return r;
}
// Mat3 * Vec3.
fn mat3_mul(at: u32, v: vec3<f32>) -> vec3<f32> {
    var r = sv3(at) * v.x;
    r = r + sv3(at + 3u) * v.y;
    r = r + sv3(at + 6u) * v.z;
    return r;
}

// ---- random numbers: sampler.rs and the SDK's PixelRng ----

// 64-bit values as (low, high) u32 pairs.
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let lo1 = p00 + (p01 << 16u);
    let lo = lo1 + (p10 << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + select(0u, 1u, lo1 < p00) + select(0u, 1u, lo < lo1);
    return vec2<u32>(lo, hi);
}
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let r = mul32(a.x, b.x);
    return vec2<u32>(r.x, r.y + a.x * b.y + a.y * b.x);
}
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
// a >> n for 0 < n < 32.
fn shr64(a: vec2<u32>, n: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> n) | (a.y << (32u - n)), a.y >> n);
}
// splitmix64's finaliser.
fn mix64(z0: vec2<u32>) -> vec2<u32> {
    var z = z0;
    z = mul64(z ^ shr64(z, 30u), vec2<u32>(0x1ce4e5b9u, 0xbf58476du));
    z = mul64(z ^ shr64(z, 27u), vec2<u32>(0x133111ebu, 0x94d049bbu));
    return z ^ shr64(z, 31u);
}

var<private> rng_key: vec2<u32>;
var<private> rng_counter: u32;
var<private> smp_index: u32;
var<private> smp_pixel_seed: u32;
var<private> smp_pair: u32;

fn hash(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}
fn laine_karras(x0: u32, seed: u32) -> u32 {
    var x = x0 + seed;
    x ^= x * 0x6c50b47cu;
    x ^= x * 0xb82f1e52u;
    x ^= x * 0xc7afe638u;
    x ^= x * 0x8d22f6e6u;
    return x;
}
fn scramble(x: u32, seed: u32) -> u32 { return reverseBits(laine_karras(reverseBits(x), seed)); }
fn sobol01(index: u32) -> vec2<u32> {
    var y = 0u;
    var v = 1u << 31u;
    var i = index;
    while (i != 0u) {
        if ((i & 1u) != 0u) { y ^= v; }
        i >>= 1u;
        v ^= v >> 1u;
    }
    return vec2<u32>(reverseBits(index), y);
}
fn to_unit(x: u32) -> f32 { return f32(x >> 8u) * (1.0 / 16777216.0); }

fn sampler_init(x: u32, y: u32, sample: u32) {
    let seed = vec2<u32>(P[P_SEED_LO], P[P_SEED_HI]);
    let frame = P[P_FRAME];
    smp_pixel_seed = hash(seed.x ^ hash(seed.y ^ hash(frame ^ hash(x ^ hash(y)))));
    smp_index = sample;
    smp_pair = 0u;
    var k = mix64(seed ^ vec2<u32>(0x00000001u, 0x7e55e7a0u));
    k = mix64(k ^ vec2<u32>(frame, 0u));
    k = mix64(k ^ vec2<u32>(y, x));
    k = mix64(k ^ vec2<u32>(sample, 0u));
    rng_key = k;
    rng_counter = 0u;
}
fn next_f32() -> f32 {
    rng_counter += 1u;
    let r = mix64(add64(rng_key, mul64(vec2<u32>(rng_counter, 0u), vec2<u32>(0x7f4a7c15u, 0x9e3779b9u))));
    return f32(r.y >> 8u) * (1.0 / 16777216.0);
}
fn next_1d() -> f32 { return next_f32(); }
fn next_2d() -> vec2<f32> {
    let pair = smp_pair;
    smp_pair += 1u;
    if (pair >= SOBOL_PAIRS) {
        let a = next_f32();
        let b = next_f32();
        return vec2<f32>(a, b);
    }
    let seed = hash(smp_pixel_seed ^ hash(pair * 0x9e3779b9u));
    let index = scramble(smp_index, seed);
    let xy = sobol01(index);
    return vec2<f32>(to_unit(scramble(xy.x, hash(seed ^ 1u))), to_unit(scramble(xy.y, hash(seed ^ 2u))));
}

// ---- camera.rs ----

fn filter_sample(u: f32) -> f32 {
    let x = u * f32(FILTER_TABLE - 1u);
    let i = min(u32(x), FILTER_TABLE - 2u);
    let f = x - f32(i);
    let a = sf(P[P_FILTER] + i);
    let b = sf(P[P_FILTER] + i + 1u);
    return a + (b - a) * f;
}

struct Ray {
    o: vec3<f32>,
    d: vec3<f32>,
    inv: vec3<f32>,
}
fn make_ray(o: vec3<f32>, d: vec3<f32>) -> Ray {
    return Ray(o, d, vec3<f32>(1.0 / d.x, 1.0 / d.y, 1.0 / d.z));
}

fn camera_ray(film: vec2<f32>) -> Ray {
    let w = f32(P[P_WIDTH]);
    let h = f32(P[P_HEIGHT]);
    let aspect = w / h;
    let ortho = pf(P_ORTHO);
    if (ortho > 0.0) {
        let ox = (2.0 * film.x / w - 1.0) * ortho * aspect;
        let oy = (1.0 - 2.0 * film.y / h) * ortho;
        return make_ray(pv3(P_CAM_O) + pv3(P_CAM_R) * ox + pv3(P_CAM_U) * oy, pv3(P_CAM_F));
    }
    let tanf = pf(P_TAN_HALF_FOV);
    let sx = (2.0 * film.x / w - 1.0) * tanf * aspect;
    let sy = (1.0 - 2.0 * film.y / h) * tanf;
    let dir = normalize3(pv3(P_CAM_F) + pv3(P_CAM_R) * sx + pv3(P_CAM_U) * sy);
    return make_ray(pv3(P_CAM_O), dir);
}

// ---- textures (scene/texture.rs) ----

fn rem_euclid(a: i32, b: i32) -> i32 {
    let r = a % b;
    return select(r, r + b, r < 0);
}
fn wrap(i: i32, n: u32, mode: u32) -> u32 {
    let ni = i32(n);
    if (mode == 0u) { return u32(rem_euclid(i, ni)); }
    if (mode == 1u) { return u32(clamp(i, 0, ni - 1)); }
    let period = 2 * ni;
    let m = rem_euclid(i, period);
    return u32(select(period - 1 - m, m, m < ni));
}
fn texel(t: u32, x: i32, y: i32, srgb: bool) -> vec4<f32> {
    let w = S[t];
    let xx = wrap(x, w, S[t + 2u]);
    let yy = wrap(y, S[t + 1u], S[t + 3u]);
    let v = TX[S[t + 5u] + yy * w + xx];
    let r = v & 0xffu;
    let g = (v >> 8u) & 0xffu;
    let b = (v >> 16u) & 0xffu;
    let a = v >> 24u;
    if (srgb) {
        let lut = P[P_SRGB];
        return vec4<f32>(sf(lut + r), sf(lut + g), sf(lut + b), f32(a) / 255.0);
    }
    return vec4<f32>(f32(r), f32(g), f32(b), f32(a)) / 255.0;
}
// Rust's saturating `as i64` within what i32 holds (coordinates past 2³⁰
// texels have no fractional precision left anyway).
fn to_int(x: f32) -> i32 { return i32(clamp(x, -1073741824.0, 1073741824.0)); }
fn lerp4(a: vec4<f32>, b: vec4<f32>, s: f32) -> vec4<f32> { return a * (1.0 - s) + b * s; }
fn srgb_decode(c: f32) -> f32 {
    if (c <= 0.04045) { return c / 12.92; }
    return pow((c + 0.055) / 1.055, 2.4);
}
// `Texture::sample`: the Principled v1 model filters sRGB textures on their
// encoded values and decodes after, as Cycles does.
fn tex_sample(ti: u32, uv: vec2<f32>, srgb: bool) -> vec4<f32> {
    if (srgb && P[P_MODEL] == 1u) {
        let v = tex_filter(ti, uv, false);
        return vec4<f32>(srgb_decode(v.x), srgb_decode(v.y), srgb_decode(v.z), v.w);
    }
    return tex_filter(ti, uv, srgb);
}
fn tex_filter(ti: u32, uv: vec2<f32>, srgb: bool) -> vec4<f32> {
    let t = P[P_TEXTURES] + ti * R_TEXTURE;
    if (!(is_finite(uv.x) && is_finite(uv.y))) { return texel(t, 0, 0, srgb); }
    let x = uv.x * f32(S[t]) - 0.5;
    let y = uv.y * f32(S[t + 1u]) - 0.5;
    if (S[t + 4u] == 0u) { return texel(t, to_int(floor(x + 0.5)), to_int(floor(y + 0.5)), srgb); }
    let x0 = floor(x);
    let y0 = floor(y);
    let fx = x - x0;
    let fy = y - y0;
    let xi = to_int(x0);
    let yi = to_int(y0);
    let a = texel(t, xi, yi, srgb);
    let b = texel(t, xi + 1, yi, srgb);
    let c = texel(t, xi, yi + 1, srgb);
    let d = texel(t, xi + 1, yi + 1, srgb);
    return lerp4(lerp4(a, b, fx), lerp4(c, d, fx), fy);
}

// ---- shade.rs ----

fn bary3(a: vec3<f32>, b: vec3<f32>, c: vec3<f32>, u: f32, v: f32) -> vec3<f32> {
    return a * (1.0 - u - v) + b * u + c * v;
}
fn bary2(a: vec2<f32>, b: vec2<f32>, c: vec2<f32>, u: f32, v: f32) -> vec2<f32> {
    return a * (1.0 - u - v) + b * u + c * v;
}
fn mesh_at(m: u32) -> u32 { return P[P_MESHES] + m * R_MESH; }
fn material_at(m: u32) -> u32 { return P[P_MATERIALS] + S[mesh_at(m) + 10u] * R_MATERIAL; }
fn instance_at(i: u32) -> u32 { return P[P_INSTANCES] + i * R_INSTANCE; }

fn tri_indices(m: u32, tri: u32) -> vec3<u32> {
    let at = S[m] + 3u * tri;
    return vec3<u32>(S[at], S[at + 1u], S[at + 2u]);
}
fn mesh_uv(m: u32, uvset: u32, i: vec3<u32>, u: f32, v: f32) -> vec2<f32> {
    let off = select(6u, 8u, uvset == 1u);
    if (S[m + off + 1u] == 0u) { return vec2<f32>(0.0, 0.0); }
    let at = S[m + off];
    let a = vec2<f32>(sf(at + 2u * i.x), sf(at + 2u * i.x + 1u));
    let b = vec2<f32>(sf(at + 2u * i.y), sf(at + 2u * i.y + 1u));
    let c = vec2<f32>(sf(at + 2u * i.z), sf(at + 2u * i.z + 1u));
    return bary2(a, b, c, u, v);
}
// A material's texture at a point: reference `slot` (0 base colour, 1
// metallic-roughness, 2 normal, 3 emissive) of material `mat`, through its
// KHR_texture_transform; call only when the reference is not NONE.
fn mat_tex(m: u32, mat: u32, slot: u32, i: vec3<u32>, u: f32, v: f32, srgb: bool) -> vec4<f32> {
    let r = mat + tex_ref_word(slot);
    let uv = mesh_uv(m, S[r + 1u], i, u, v);
    let t = mat + 27u + 6u * slot;
    let tuv = vec2<f32>(sf(t) * uv.x + sf(t + 1u) * uv.y + sf(t + 2u), sf(t + 3u) * uv.x + sf(t + 4u) * uv.y + sf(t + 5u));
    return tex_sample(S[r], tuv, srgb);
}
// Material words of the references: 4 base colour, 8 metallic-roughness,
// 10 normal, 16 emissive.
fn tex_ref_word(slot: u32) -> u32 {
    return select(select(select(16u, 10u, slot == 2u), 8u, slot == 1u), 4u, slot == 0u);
}

fn alpha_at(m: u32, mat: u32, tri: u32, u: f32, v: f32) -> f32 {
    let a = sf(mat + 3u);
    if (S[mat + 4u] == NONE) { return a; }
    return a * mat_tex(m, mat, 0u, tri_indices(m, tri), u, v, true).w;
}

fn emission_at(m: u32, mat: u32, tri: u32, u: f32, v: f32) -> vec3<f32> {
    let e = sv3(mat + 13u);
    if (!(max_el(e) > 0.0)) { return vec3<f32>(0.0); }
    if (S[mat + 16u] == NONE) { return e; }
    return e * mat_tex(m, mat, 3u, tri_indices(m, tri), u, v, true).xyz;
}

struct Tri {
    a: vec3<f32>,
    b: vec3<f32>,
    c: vec3<f32>,
}
fn world_triangle(inst: u32, tri: u32) -> Tri {
    let m = mesh_at(S[inst + 33u]);
    let i = tri_indices(m, tri);
    if ((S[inst + 37u] & 4u) != 0u) {
        let at = S[inst + 38u];
        return Tri(sv3(at + 3u * i.x), sv3(at + 3u * i.y), sv3(at + 3u * i.z));
    }
    let at = S[m + 1u];
    let w = inst + 12u;
    return Tri(xf_point(w, sv3(at + 3u * i.x)), xf_point(w, sv3(at + 3u * i.y)), xf_point(w, sv3(at + 3u * i.z)));
}

struct Hit {
    t: f32,
    inst: u32,
    tri: u32,
    u: f32,
    v: f32,
    found: bool,
}

struct Surface {
    position: vec3<f32>,
    ng: vec3<f32>,
    n: vec3<f32>,
    base: vec3<f32>,
    metallic: f32,
    roughness: f32,
    emission: vec3<f32>,
    // The material record (its specular words).
    mat: u32,
}

fn surface(hit: Hit, origin: vec3<f32>, dir: vec3<f32>) -> Surface {
    let inst = instance_at(hit.inst);
    let m = mesh_at(S[inst + 33u]);
    let mat = material_at(S[inst + 33u]);
    let i = tri_indices(m, hit.tri);
    let u = hit.u;
    let v = hit.v;
    let p = world_triangle(inst, hit.tri);
    let flags = S[inst + 37u];

    var ng = normalize_or(cross3(p.b - p.a, p.c - p.a), vec3<f32>(0.0, 1.0, 0.0));
    let front = dot3(ng, dir) < 0.0;
    var n: vec3<f32>;
    if (S[m + 3u] == 0u) {
        n = ng;
    } else if ((flags & 12u) == 12u) {
        let at = S[inst + 39u];
        n = bary3(sv3(at + 3u * i.x), sv3(at + 3u * i.y), sv3(at + 3u * i.z), u, v);
    } else {
        let at = S[m + 2u];
        n = mat3_mul(inst + 24u, bary3(sv3(at + 3u * i.x), sv3(at + 3u * i.y), sv3(at + 3u * i.z), u, v));
    }
    n = normalize_or(n, ng);

    // Normal map (tangent space, glTF: +Y up in the texture).
    if (S[mat + 10u] != NONE) {
        let t = mat_tex(m, mat, 2u, i, u, v, false);
        if (S[m + 5u] != 0u) {
            let at = S[m + 4u];
            let ta = vec4<f32>(sv3(at + 4u * i.x), sf(at + 4u * i.x + 3u));
            let tb = vec4<f32>(sv3(at + 4u * i.y), sf(at + 4u * i.y + 3u));
            let tc = vec4<f32>(sv3(at + 4u * i.z), sf(at + 4u * i.z + 3u));
            let tw = ta * (1.0 - u - v) + tb * u + tc * v;
            var tangent = tw.xyz;
            if ((flags & 4u) == 0u) { tangent = xf_vector(inst + 12u, tw.xyz); }
            tangent = normalize_or(tangent - n * dot3(n, tangent), vec3<f32>(0.0));
            if (any(tangent != vec3<f32>(0.0))) {
                let bitangent = cross3(n, tangent) * select(1.0, -1.0, tw.w < 0.0);
                let ns = sf(mat + 12u);
                let mm = (t.xyz * 2.0 - vec3<f32>(1.0)) * vec3<f32>(ns, ns, 1.0);
                n = normalize_or(tangent * mm.x + bitangent * mm.y + n * mm.z, n);
            }
        }
    }

    // Face the incoming ray with both normals, keeping them on one side.
    if (dot3(ng, dir) > 0.0) { ng = -ng; }
    if (dot3(n, ng) < 0.0) { n = -n; }

    var base = vec4<f32>(sv3(mat), sf(mat + 3u));
    if (S[mat + 4u] != NONE) { base = base * mat_tex(m, mat, 0u, i, u, v, true); }
    var metallic = sf(mat + 6u);
    var roughness = sf(mat + 7u);
    if (S[mat + 8u] != NONE) {
        let t = mat_tex(m, mat, 1u, i, u, v, false);
        roughness = roughness * t.y;
        metallic = metallic * t.z;
    }
    var emission = vec3<f32>(0.0);
    if (front || S[mat + 20u] != 0u) { emission = emission_at(m, mat, hit.tri, u, v); }
    var s: Surface;
    s.position = origin + dir * hit.t;
    s.ng = ng;
    s.n = n;
    s.base = min(max(base.xyz, vec3<f32>(0.0)), vec3<f32>(1.0));
    s.metallic = clamp(metallic, 0.0, 1.0);
    s.roughness = clamp(roughness, 0.0, 1.0);
    s.emission = emission;
    s.mat = mat;
    return s;
}

// ---- bvh.rs and frame.rs: traversal ----

// Distance at which the ray enters box `node`, or -1 when it misses it
// before `t_max` (a hit is never negative).
fn hit_box(r: Ray, node: u32, t_max: f32) -> f32 {
    let at = P[P_NODES] + node * R_NODE;
    let lo = sv3(at);
    let hi = sv3(at + 3u);
    let x0 = (lo.x - r.o.x) * r.inv.x;
    let x1 = (hi.x - r.o.x) * r.inv.x;
    let y0 = (lo.y - r.o.y) * r.inv.y;
    let y1 = (hi.y - r.o.y) * r.inv.y;
    let z0 = (lo.z - r.o.z) * r.inv.z;
    let z1 = (hi.z - r.o.z) * r.inv.z;
    let near = fmax(fmax(fmin(x0, x1), fmin(y0, y1)), fmax(fmin(z0, z1), 0.0));
    let far = fmin(fmin(fmax(x0, x1), fmax(y0, y1)), fmin(fmax(z0, z1), t_max));
    if (near <= far) { return near; }
    return -1.0;
}

// Möller–Trumbore; x = t (or -1 on a miss), y = u, z = v, w = 1 if back-facing.
fn hit_triangle(r: Ray, k: u32, t_max: f32) -> vec4<f32> {
    let at = P[P_TRIS] + k * R_TRI;
    let v0 = sv3(at);
    let e1 = sv3(at + 3u) - v0;
    let e2 = sv3(at + 6u) - v0;
    let p = cross3(r.d, e2);
    let det = dot3(e1, p);
    let miss = vec4<f32>(-1.0, 0.0, 0.0, 0.0);
    if (abs(det) < 1e-12) { return miss; }
    let inv = 1.0 / det;
    let s = r.o - v0;
    let u = dot3(s, p) * inv;
    if (!(u >= 0.0 && u <= 1.0)) { return miss; }
    let q = cross3(s, e1);
    let w = dot3(r.d, q) * inv;
    if (w < 0.0 || u + w > 1.0) { return miss; }
    let t = dot3(e2, q) * inv;
    if (t > 0.0 && t < t_max) { return vec4<f32>(t, u, w, select(0.0, 1.0, det < 0.0)); }
    return miss;
}

// frame.rs `intersect_instance`: the nearest (or, with `any`, the first)
// accepted hit in instance `ii` before `t_max0`.
fn intersect_instance(ii: u32, ray: Ray, t_max0: f32, any_hit: bool) -> Hit {
    var best: Hit;
    best.found = false;
    let inst = instance_at(ii);
    let flags = S[inst + 37u];
    var lray = ray;
    if ((flags & 2u) == 0u) { lray = make_ray(xf_point(inst, ray.o), xf_vector(inst, ray.d)); }
    let mi = S[inst + 33u];
    let m = mesh_at(mi);
    let mat = material_at(mi);
    let mirrored = (flags & 1u) != 0u;
    let double_sided = S[mat + 20u] != 0u;
    let mask = S[mat + 18u] == 1u;
    let node_base = S[inst + 34u];
    let tri_base = S[inst + 35u];
    var t_max = t_max0;

    if (hit_box(lray, node_base, t_max) < 0.0) { return best; }
    var stack: array<u32, 64>;
    var sp = 0u;
    var node = 0u;
    loop {
        let at = P[P_NODES] + (node_base + node) * R_NODE;
        let first = S[at + 6u];
        let count = S[at + 7u];
        var pop = true;
        if (count > 0u) {
            for (var k = first; k < first + count; k++) {
                let h = hit_triangle(lray, tri_base + k, t_max);
                if (h.x < 0.0) { continue; }
                let tri = S[P[P_TRI_IDS] + tri_base + k];
                if ((h.w != 0.0) != mirrored && !double_sided) { continue; }
                if (mask && alpha_at(m, mat, tri, h.y, h.z) < sf(mat + 19u)) { continue; }
                t_max = h.x;
                best = Hit(h.x, ii, tri, h.y, h.z, true);
                if (any_hit) { return best; }
            }
        } else {
            let a = first;
            let b = first + 1u;
            let ha = hit_box(lray, node_base + a, t_max);
            let hb = hit_box(lray, node_base + b, t_max);
            if (ha >= 0.0 && hb >= 0.0) {
                var near = a;
                var far = b;
                if (!(ha <= hb)) { near = b; far = a; }
                if (sp < 64u) {
                    stack[sp] = far;
                    sp += 1u;
                }
                node = near;
                pop = false;
            } else if (ha >= 0.0) {
                node = a;
                pop = false;
            } else if (hb >= 0.0) {
                node = b;
                pop = false;
            }
        }
        if (pop) {
            if (sp == 0u) { break; }
            sp -= 1u;
            node = stack[sp];
        }
    }
    return best;
}

// frame.rs `intersect` (any_hit = false) and `occluded` (true).
fn intersect(ray: Ray, t_max0: f32, any_hit: bool) -> Hit {
    var best: Hit;
    best.found = false;
    if (P[P_N_INSTANCES] == 0u) { return best; }
    var t_max = t_max0;
    if (hit_box(ray, 0u, t_max) < 0.0) { return best; }
    var stack: array<u32, 64>;
    var sp = 0u;
    var node = 0u;
    loop {
        let at = P[P_NODES] + node * R_NODE;
        let first = S[at + 6u];
        let count = S[at + 7u];
        var pop = true;
        if (count > 0u) {
            for (var k = first; k < first + count; k++) {
                let ii = S[P[P_TLAS_ORDER] + k];
                let h = intersect_instance(ii, ray, t_max, any_hit);
                if (h.found) {
                    t_max = h.t;
                    best = h;
                    if (any_hit) { return best; }
                }
            }
        } else {
            let a = first;
            let b = first + 1u;
            let ha = hit_box(ray, a, t_max);
            let hb = hit_box(ray, b, t_max);
            if (ha >= 0.0 && hb >= 0.0) {
                var near = a;
                var far = b;
                if (!(ha <= hb)) { near = b; far = a; }
                if (sp < 64u) {
                    stack[sp] = far;
                    sp += 1u;
                }
                node = near;
                pop = false;
            } else if (ha >= 0.0) {
                node = a;
                pop = false;
            } else if (hb >= 0.0) {
                node = b;
                pop = false;
            }
        }
        if (pop) {
            if (sp == 0u) { break; }
            sp -= 1u;
            node = stack[sp];
        }
    }
    return best;
}

fn occluded(ray: Ray, t_max: f32) -> bool { return intersect(ray, t_max, true).found; }

// frame.rs `pick_emitter`: NONE when there is none.
fn pick_emitter(u: f32) -> u32 {
    let n = P[P_N_EMITTERS];
    if (n == 0u) { return NONE; }
    let cdf = P[P_CDF];
    let pmf = P[P_PMF];
    // partition_point(|c| c <= u) over the n + 1 CDF entries.
    var lo = 0u;
    var hi = n + 1u;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (sf(cdf + mid) <= u) { lo = mid + 1u; } else { hi = mid; }
    }
    var i = min(select(lo - 1u, 0u, lo == 0u), n - 1u);
    while (sf(pmf + i) == 0.0 && i + 1u < n) { i += 1u; }
    if (sf(pmf + i) > 0.0) { return i; }
    return NONE;
}

// ---- bsdf.rs ----

struct Bsdf {
    base: vec3<f32>,
    metallic: f32,
    // `bsdf::Specular` and Principled v1's Fresnel (material words 21..27).
    f0: vec3<f32>,
    f90: f32,
    v1_f0: f32,
    v1_ior: f32,
    roughness: f32,
    alpha: f32,
    t: vec3<f32>,
    b: vec3<f32>,
    n: vec3<f32>,
}

fn make_bsdf(n: vec3<f32>, base: vec3<f32>, metallic: f32, roughness: f32, mat: u32) -> Bsdf {
    // glam's `any_orthonormal_pair` (Duff et al. 2017).
    let sign = signum(n.z);
    let a = -1.0 / (sign + n.z);
    let b = n.x * n.y * a;
    let t = vec3<f32>(1.0 + sign * n.x * n.x * a, sign * b, -sign * n.x);
    let bt = vec3<f32>(b, sign + n.y * n.y * a, -n.y);
    return Bsdf(base, metallic, sv3(mat + 21u), sf(mat + 24u), sf(mat + 25u), sf(mat + 26u),
        roughness, rmax(roughness * roughness, MIN_ALPHA), t, bt, n);
}
fn bsdf_local(s: Bsdf, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(dot3(v, s.t), dot3(v, s.b), dot3(v, s.n)); }
fn bsdf_world(s: Bsdf, v: vec3<f32>) -> vec3<f32> { return s.t * v.x + s.b * v.y + s.n * v.z; }
fn ggx_d(s: Bsdf, cos_h: f32) -> f32 {
    let a2 = s.alpha * s.alpha;
    let k = cos_h * cos_h * (a2 - 1.0) + 1.0;
    return a2 / (PI * k * k);
}
fn visibility(s: Bsdf, nl: f32, nv: f32) -> f32 {
    let a2 = s.alpha * s.alpha;
    let gv = nl * sqrt(nv * nv * (1.0 - a2) + a2);
    let gl = nv * sqrt(nl * nl * (1.0 - a2) + a2);
    let sum = gv + gl;
    if (sum > 0.0) { return 0.5 / sum; }
    return 0.0;
}
fn g1(s: Bsdf, c: f32) -> f32 {
    let a2 = s.alpha * s.alpha;
    return 2.0 * c / (c + sqrt(a2 + (1.0 - a2) * c * c));
}
fn spec_prob(s: Bsdf, nv: f32) -> f32 {
    let f = pow5(1.0 - clamp(nv, 0.0, 1.0));
    let f0 = max_el(s.f0);
    let spec = s.metallic + (1.0 - s.metallic) * (f0 + (s.f90 - f0) * f);
    let diffuse = (1.0 - s.metallic) * (1.0 - f) * rmax(luminance(s.base), 0.0);
    return clamp(spec / rmax(spec + diffuse, 1e-6), 0.05, 1.0);
}

fn gltf_brdf(s: Bsdf, o: vec3<f32>, i: vec3<f32>, h: vec3<f32>) -> vec3<f32> {
    let vh = rmax(dot3(o, h), 0.0);
    let schlick = pow5(1.0 - vh);
    let dv = ggx_d(s, h.z) * visibility(s, i.z, o.z);
    let f_dielectric = s.f0 + (vec3<f32>(s.f90) - s.f0) * schlick;
    let f_metal = s.base + (vec3<f32>(1.0) - s.base) * schlick;
    let dielectric = s.base * FRAC_1_PI * (vec3<f32>(1.0) - f_dielectric) + f_dielectric * dv;
    let metal = f_metal * dv;
    return dielectric * (1.0 - s.metallic) + metal * s.metallic;
}

fn fresnel_dielectric(cos_i: f32, eta: f32) -> f32 {
    let c = abs(cos_i);
    var g = eta * eta - 1.0 + c * c;
    if (g <= 0.0) { return 1.0; }
    g = sqrt(g);
    let a = (g - c) / (g + c);
    let b = (c * (g + c) - 1.0) / (c * (g - c) + 1.0);
    return 0.5 * a * a * (1.0 + b * b);
}

fn principled_v1(s: Bsdf, o: vec3<f32>, i: vec3<f32>, h: vec3<f32>) -> vec3<f32> {
    let lh = dot3(i, h);
    let fd90 = 0.5 + 2.0 * s.roughness * lh * lh;
    let fl = pow5(rmax(1.0 - i.z, 0.0));
    let fv = pow5(rmax(1.0 - o.z, 0.0));
    let fd = (1.0 + (fd90 - 1.0) * fl) * (1.0 + (fd90 - 1.0) * fv);
    let diffuse = s.base * ((1.0 - s.metallic) * FRAC_1_PI * fd);
    let spec0 = s.f0 * (1.0 - s.metallic) + s.base * s.metallic;
    let fh = clamp((fresnel_dielectric(lh, s.v1_ior) - s.v1_f0) / (1.0 - s.v1_f0), 0.0, 1.0);
    let fresnel = spec0 * (1.0 - fh) + vec3<f32>(fh);
    let g = g1(s, o.z) * g1(s, i.z);
    return diffuse + fresnel * (ggx_d(s, h.z) * g / (4.0 * o.z * i.z));
}

// `scene::SpotCone::falloff` of the light record at `l`.
fn spot_falloff(l: u32, cd: f32) -> f32 {
    let cos_outer = sf(l + 11u);
    let width = sf(l + 12u);
    if (S[l + 13u] != 0u) {
        if (cd <= cos_outer) { return 0.0; }
        let t = cd - cos_outer;
        if (t < width && width != 0.0) {
            let x = t / width;
            return cd * (x * x * (3.0 - 2.0 * x));
        }
        return cd;
    }
    let a = clamp((cd - cos_outer) * (1.0 / width), 0.0, 1.0);
    return a * a;
}

// `f·cos θi` in xyz and the pdf in w.
fn bsdf_eval(s: Bsdf, wo: vec3<f32>, wi: vec3<f32>) -> vec4<f32> {
    let o = bsdf_local(s, wo);
    let i = bsdf_local(s, wi);
    if (o.z <= 0.0 || i.z <= 0.0) { return vec4<f32>(0.0); }
    let h = normalize_or(o + i, vec3<f32>(0.0));
    if (all(h == vec3<f32>(0.0))) { return vec4<f32>(0.0); }
    var f: vec3<f32>;
    if (P[P_MODEL] == 1u) { f = principled_v1(s, o, i, h); } else { f = gltf_brdf(s, o, i, h); }
    let ps = spec_prob(s, o.z);
    let pdf_spec = g1(s, o.z) * ggx_d(s, h.z) / (4.0 * o.z);
    let pdf = ps * pdf_spec + (1.0 - ps) * i.z * FRAC_1_PI;
    return vec4<f32>(f * i.z, pdf);
}

fn cosine_hemisphere(u1: f32, u2: f32) -> vec3<f32> {
    let r = sqrt(u1);
    let phi = TAU * u2;
    return vec3<f32>(r * cos(phi), r * sin(phi), sqrt(rmax(1.0 - u1, 0.0)));
}

fn sample_vndf(o: vec3<f32>, alpha: f32, u1: f32, u2: f32) -> vec3<f32> {
    let vh = normalize3(vec3<f32>(alpha * o.x, alpha * o.y, o.z));
    let lensq = vh.x * vh.x + vh.y * vh.y;
    var t1 = vec3<f32>(1.0, 0.0, 0.0);
    if (lensq > 0.0) { t1 = vec3<f32>(-vh.y, vh.x, 0.0) / sqrt(lensq); }
    let t2 = cross3(vh, t1);
    let r = sqrt(u1);
    let phi = TAU * u2;
    let p1 = r * cos(phi);
    let s = 0.5 * (1.0 + vh.z);
    let p2 = (1.0 - s) * sqrt(rmax(1.0 - p1 * p1, 0.0)) + s * r * sin(phi);
    let nh = t1 * p1 + t2 * p2 + vh * sqrt(rmax(1.0 - p1 * p1 - p2 * p2, 0.0));
    return normalize3(vec3<f32>(alpha * nh.x, alpha * nh.y, rmax(nh.z, 0.0)));
}

struct BsdfSample {
    wi: vec3<f32>,
    weight: vec3<f32>,
    pdf: f32,
    ok: bool,
}

fn bsdf_sample(s: Bsdf, wo: vec3<f32>, u0: f32, u1: f32, u2: f32) -> BsdfSample {
    var out: BsdfSample;
    out.ok = false;
    let o = bsdf_local(s, wo);
    if (o.z <= 0.0) { return out; }
    var i: vec3<f32>;
    if (u0 < spec_prob(s, o.z)) {
        let h = sample_vndf(o, s.alpha, u1, u2);
        i = 2.0 * dot3(o, h) * h - o;
        if (i.z <= 0.0) { return out; }
    } else {
        i = cosine_hemisphere(u1, u2);
    }
    let wi = normalize3(bsdf_world(s, i));
    let e = bsdf_eval(s, wo, wi);
    if (e.w > 0.0 && max_el(e.xyz) > 0.0) {
        out.wi = wi;
        out.weight = e.xyz / e.w;
        out.pdf = e.w;
        out.ok = true;
    }
    return out;
}

// ---- integrator.rs ----

fn power_heuristic(a: f32, b: f32) -> f32 {
    let a2 = a * a;
    let b2 = b * b;
    if (a2 + b2 > 0.0) { return a2 / (a2 + b2); }
    return 0.0;
}

fn offset(p: vec3<f32>, ng: vec3<f32>, dir: vec3<f32>) -> vec3<f32> {
    let eps = 1e-4 * rmax(max_el(abs(p)), 1.0);
    if (dot3(dir, ng) >= 0.0) { return p + ng * eps; }
    return p - ng * eps;
}

struct PathResult {
    radiance: vec3<f32>,
    albedo: vec3<f32>,
    normal: vec3<f32>,
    depth: f32,
}

fn trace(ray0: Ray) -> PathResult {
    var out: PathResult;
    out.radiance = vec3<f32>(0.0);
    out.albedo = vec3<f32>(0.0);
    out.normal = vec3<f32>(0.0);
    out.depth = 0.0;
    var ray = ray0;
    var beta = vec3<f32>(1.0);
    var prev_bsdf_pdf = 0.0;
    var prev_origin = ray.o;
    let background = pv3(P_BACKGROUND);
    // The last vertex's depth: Cycles' max bounces + 1 (set by the host).
    let max_bounces = P[P_MAX_BOUNCES];

    for (var depth = 0u; depth <= max_bounces; depth++) {
        let hit = intersect(ray, inf(), false);
        if (!hit.found) {
            out.radiance += beta * background;
            if (depth == 0u) {
                out.albedo = background;
                out.depth = inf();
            }
            break;
        }
        let sp = surface(hit, ray.o, ray.d);
        if (depth == 0u) {
            out.albedo = sp.base;
            out.normal = sp.n;
            out.depth = hit.t;
        }

        // Light the path found by itself, weighted against light sampling.
        if (max_el(sp.emission) > 0.0) {
            let inst = instance_at(hit.inst);
            let first = S[inst + 36u];
            var weight = 1.0;
            if (first != NONE && depth > 0u) {
                let tri = world_triangle(inst, hit.tri);
                let area = 0.5 * length3(cross3(tri.b - tri.a, tri.c - tri.a));
                let cos_l = abs(dot3(sp.ng, -ray.d));
                let pmf = sf(P[P_PMF] + first + hit.tri);
                let d = sp.position - prev_origin;
                let dist2 = dot3(d, d);
                var light_pdf = 0.0;
                if (area > 0.0 && cos_l > 0.0) { light_pdf = pmf * dist2 / (cos_l * area); }
                weight = power_heuristic(prev_bsdf_pdf, light_pdf);
            }
            out.radiance += beta * sp.emission * weight;
        }
        if (depth == max_bounces) { break; }

        let wo = -ray.d;
        let bsdf = make_bsdf(sp.n, sp.base, sp.metallic, sp.roughness, sp.mat);

        // Next-event estimation: one emissive triangle, chosen by power.
        let e = pick_emitter(next_1d());
        if (e != NONE) {
            let ei = S[P[P_EMITTERS] + 2u * e];
            let etri = S[P[P_EMITTERS] + 2u * e + 1u];
            let inst = instance_at(ei);
            let tri = world_triangle(inst, etri);
            let st = next_2d();
            var s = st.x;
            var t = st.y;
            if (s + t > 1.0) {
                s = 1.0 - st.x;
                t = 1.0 - st.y;
            }
            let q = tri.a + (tri.b - tri.a) * s + (tri.c - tri.a) * t;
            let cr = cross3(tri.b - tri.a, tri.c - tri.a);
            let area = 0.5 * length3(cr);
            let nl = normalize_or(cr, vec3<f32>(0.0));
            let to_light = q - sp.position;
            let dist2 = dot3(to_light, to_light);
            let wi = to_light / sqrt(dist2);
            let cos_l = dot3(nl, -wi);
            let mi = S[inst + 33u];
            let m = mesh_at(mi);
            let mat = material_at(mi);
            let mirrored = (S[inst + 37u] & 1u) != 0u;
            let facing = select(cos_l > 0.0, cos_l < 0.0, mirrored);
            if (area > 0.0 && cos_l != 0.0 && (facing || S[mat + 20u] != 0u) && dot3(wi, sp.ng) > 0.0) {
                let fe = bsdf_eval(bsdf, wo, wi);
                if (max_el(fe.xyz) > 0.0) {
                    let le = emission_at(m, mat, etri, s, t);
                    let light_pdf = sf(P[P_PMF] + e) * dist2 / (abs(cos_l) * area);
                    let shadow = make_ray(offset(sp.position, sp.ng, wi), wi);
                    if (!occluded(shadow, sqrt(dist2) * SHADOW_SHRINK)) {
                        out.radiance += beta * fe.xyz * le * power_heuristic(light_pdf, fe.w) / light_pdf;
                    }
                }
            }
        }

        // Next-event estimation: punctual lights (delta: no MIS).
        let n_lights = P[P_N_LIGHTS];
        for (var li = 0u; li < n_lights; li++) {
            let l = P[P_LIGHTS] + li * R_LIGHT;
            let kind = S[l];
            var wi: vec3<f32>;
            var dist: f32;
            var intensity: vec3<f32>;
            if (kind == 2u) {
                wi = -sv3(l + 4u);
                dist = inf();
                intensity = sv3(l + 7u);
            } else {
                let d = sv3(l + 1u) - sp.position;
                let dist2 = dot3(d, d);
                if (dist2 <= 0.0) { continue; }
                dist = sqrt(dist2);
                wi = d / dist;
                var i = sv3(l + 7u) / dist2;
                let range = sf(l + 10u);
                if (range > 0.0) {
                    // glTF's recommended windowing of inverse-square falloff.
                    let x = pow4(dist / range);
                    let c = clamp(1.0 - x, 0.0, 1.0);
                    i *= c * c;
                }
                if (kind == 1u) {
                    i *= spot_falloff(l, dot3(sv3(l + 4u), -wi));
                }
                intensity = i;
            }
            if (max_el(intensity) <= 0.0 || dot3(wi, sp.ng) <= 0.0) { continue; }
            let f = bsdf_eval(bsdf, wo, wi).xyz;
            if (max_el(f) <= 0.0) { continue; }
            let shadow = make_ray(offset(sp.position, sp.ng, wi), wi);
            var t_max = inf();
            if (is_finite(dist)) { t_max = dist * SHADOW_SHRINK; }
            if (!occluded(shadow, t_max)) { out.radiance += beta * f * intensity; }
        }

        // Continue the path by sampling the BSDF.
        let lobe = next_1d();
        let uu = next_2d();
        let bs = bsdf_sample(bsdf, wo, lobe, uu.x, uu.y);
        if (!bs.ok) { break; }
        if (dot3(bs.wi, sp.ng) <= 0.0) { break; }
        beta *= bs.weight;
        prev_bsdf_pdf = bs.pdf;
        prev_origin = sp.position;
        if (depth >= 3u) {
            let q = clamp(max_el(beta), 0.05, 0.95);
            if (next_1d() >= q) { break; }
            beta /= q;
        }
        ray = make_ray(offset(sp.position, sp.ng, bs.wi), bs.wi);
    }
    return out;
}

// ---- the entry point: one sample of one pixel ----

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let lid = id.x;
    let g = P[P_CHUNK] + lid;
    if (g >= P[P_TOTAL]) { return; }
    let spp = P[P_SPP];
    let pixel = g / spp;
    let sidx = P[P_SAMPLE0] + g % spp;
    let x = P[P_RECT_X] + pixel % P[P_RECT_W];
    let y = P[P_RECT_Y] + pixel / P[P_RECT_W];

    sampler_init(x, y, sidx);
    let fxy = next_2d();
    let film = vec2<f32>(f32(x) + 0.5 + filter_sample(fxy.x), f32(y) + 0.5 + filter_sample(fxy.y));
    let p = trace(camera_ray(film));

    let stride = P[P_STRIDE];
    let at = lid * stride;
    OUT[at] = p.radiance.x;
    OUT[at + 1u] = p.radiance.y;
    OUT[at + 2u] = p.radiance.z;
    if (stride > 3u) {
        OUT[at + 3u] = p.albedo.x;
        OUT[at + 4u] = p.albedo.y;
        OUT[at + 5u] = p.albedo.z;
        OUT[at + 6u] = p.normal.x;
        OUT[at + 7u] = p.normal.y;
        OUT[at + 8u] = p.normal.z;
        OUT[at + 9u] = p.depth;
    }
}

// ---- the sums: each pixel's samples added on the device ----

// The SDK's `starts_sample_block`: 1, 4, 16, 64, ….
fn starts_block(s: u32) -> bool {
    return s != 0u && (s & (s - 1u)) == 0u && (countTrailingZeros(s) % 2u) == 0u;
}

// lib.rs `TileSums::add` for the samples of the chunk `main` just traced,
// one invocation per pixel it touched, each pixel's samples in index
// order: the same additions in the same order as the CPU engine, so the
// sums are what the CPU would make of these samples, bit for bit. A pixel
// cut between two chunks carries on in ACC. Colour (3), weight, albedo
// (3), normal (3), depth: totals, then the block's.
@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) id: vec3<u32>) {
    let spp = P[P_SPP];
    let start = P[P_CHUNK];
    let end = min(start + P[P_CHUNK_LEN], P[P_TOTAL]);
    let pixel = start / spp + id.x;
    if (end <= start || pixel > (end - 1u) / spp) { return; }
    let stride = P[P_STRIDE];
    let out = pixel * 2u * ACC_WORDS;
    let part = out + ACC_WORDS;
    for (var g = max(start, pixel * spp); g < min(end, (pixel + 1u) * spp); g++) {
        if (starts_block(P[P_SAMPLE0] + g % spp)) {
            for (var k = 0u; k < ACC_WORDS; k++) {
                ACC[out + k] += ACC[part + k];
                ACC[part + k] = 0.0;
            }
        }
        let at = (g - start) * stride;
        // A NaN or infinite sample is dropped, its weight too.
        if (!(is_finite(OUT[at]) && is_finite(OUT[at + 1u]) && is_finite(OUT[at + 2u]))) { continue; }
        ACC[part] += OUT[at];
        ACC[part + 1u] += OUT[at + 1u];
        ACC[part + 2u] += OUT[at + 2u];
        ACC[part + 3u] += 1.0;
        if (stride > 3u) {
            for (var k = 0u; k < 6u; k++) { ACC[part + 4u + k] += OUT[at + 3u + k]; }
            if (is_finite(OUT[at + 9u])) { ACC[part + 10u] += OUT[at + 9u]; }
        }
    }
}
