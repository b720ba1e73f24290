"""Tessera's path tracer side by side with Blender Cycles (CPU).

Run inside Blender (`cargo xtask bench-cycles` does this):

    blender -b --factory-startup --python benches/cycles/compare.py -- \
        --tessera target/release/tessera --scene samples/scenes/cornell.gltf \
        --size 128 --spp 4,16,64 --ref-spp 1024 --bounces 8 --threads 2 --out target/cycles

What it does, so that both renderers see the same scene and settings:
1. Imports the glTF into Blender and exports it again with Blender's own
   exporter: Tessera renders what Blender exports, Cycles what Blender holds.
2. Renders with Cycles: CPU, fixed thread count, no denoising, no adaptive
   sampling, no light clamping, no glossy filter, the same max bounces,
   Standard view, linear EXR out.
3. Renders the exported file with `tessera render` at the same resolution,
   samples and bounces, linear EXR out.
4. For each renderer, measures the render time per sample count (the
   median of `--repeat` renders) and the relative MSE against that
   renderer's own high-sample reference, and prints a Markdown table:
   paths/s, and the time each needs to reach the error Cycles reaches at
   the middle sample count.

A time is only as good as its clock: Tessera's render time is what
`tessera render` prints, to as many decimals as it prints (its resolution is
read from them: "0.065 s" is 0.001 s), Cycles' and the wall times come from
`time.perf_counter`. A time under ten times its resolution is rounding more
than measurement (a tenth or more of it), so no paths/s figure is derived
from it ("—" in the table, with the reason under it) and it is left out of
the time-to-quality interpolation.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import time

import bpy
import numpy as np

# Debian 12's Blender 3.4 glTF importer still uses `np.bool`, which NumPy
# 1.24 (Debian's) removed: restore the alias it means.
if "bool" not in np.__dict__:
    np.bool = bool


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser()
    p.add_argument("--tessera", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--spp", default="4,16,64")
    p.add_argument("--ref-spp", type=int, default=1024)
    p.add_argument("--bounces", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="target/cycles")
    p.add_argument("--repeat", type=int, default=3, help="renders per sample count; the median time is kept")
    return p.parse_args(argv)


# A time must be at least this many times its clock's resolution to be
# reported as a measurement.
MIN_RESOLUTIONS = 10
PERF_COUNTER_RESOLUTION = time.get_clock_info("perf_counter").resolution


def resolution_of(printed):
    """The resolution of a decimal number as printed: "0.065" -> 0.001, "4" -> 1."""
    _, _, decimals = printed.partition(".")
    return 10.0 ** -len(decimals)


def timed(t, resolution):
    """Whether `t` is far enough above its clock's resolution to be a measurement."""
    return t >= MIN_RESOLUTIONS * resolution


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def setup_scene(args):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=os.path.abspath(args.scene))
    scene = bpy.context.scene
    cams = [o for o in scene.objects if o.type == "CAMERA"]
    if not cams:
        raise SystemExit("the scene has no camera")
    scene.camera = cams[0]
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    # Blender's default world: grey 0.0508, strength 1 (Tessera's default too).
    scene.world.use_nodes = True
    bg = scene.world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.0508, 0.0508, 0.0508, 1.0)
    bg.inputs["Strength"].default_value = 1.0

    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = args.size
    r.resolution_percentage = 100
    r.threads_mode = "FIXED"
    r.threads = args.threads
    r.image_settings.file_format = "OPEN_EXR"
    r.image_settings.color_depth = "32"
    r.use_persistent_data = False
    c = scene.cycles
    c.device = "CPU"
    c.use_adaptive_sampling = False
    c.use_denoising = False
    c.max_bounces = args.bounces
    c.diffuse_bounces = args.bounces
    c.glossy_bounces = args.bounces
    c.transmission_bounces = args.bounces
    c.transparent_max_bounces = args.bounces
    c.volume_bounces = 0
    c.sample_clamp_direct = 0.0
    c.sample_clamp_indirect = 0.0
    c.blur_glossy = 0.0
    c.caustics_reflective = True
    c.caustics_refractive = True
    c.seed = 0
    c.tile_size = 64
    scene.view_settings.view_transform = "Standard"
    return scene


def export_gltf(path):
    bpy.ops.export_scene.gltf(
        filepath=path, export_format="GLB", export_cameras=True, export_lights=True, export_apply=True
    )


def render_cycles(scene, spp, path):
    scene.cycles.samples = spp
    scene.render.filepath = path
    t = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    return time.perf_counter() - t


def render_tessera(args, glb, spp, out_dir, denoise=False):
    cmd = [
        args.tessera, "render", glb, "--frames", "1", "--width", str(args.size), "--height", str(args.size),
        "--spp", str(spp), "--bounces", str(args.bounces), "--format", "exr", "--view", "standard",
        "--threads", str(args.threads), "--out", out_dir,
    ] + (["--denoise"] if denoise else [])
    t = time.perf_counter()
    run = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    # Tessera reports its render time alone ("... at N spp in X s ..."):
    # the wall time also counts process start and loading the module/scene.
    m = re.search(r" spp in ([0-9]+(?:\.[0-9]+)?) s", run.stdout)
    if not m:
        raise SystemExit(f"no render time in tessera render's output:\n{run.stdout}")
    seconds = float(m.group(1))
    if denoise:
        # Sampling and the denoiser are reported apart: the denoised image costs both.
        d = re.search(r"denoised with \S+ in ([0-9]+(?:\.[0-9]+)?) s", run.stdout)
        if not d:
            raise SystemExit(f"no denoising time in tessera render's output:\n{run.stdout}")
        seconds += float(d.group(1))
    stem = os.path.splitext(os.path.basename(glb))[0]
    name = f"{stem}-0001.denoised.exr" if denoise else f"{stem}-0001.exr"
    return seconds, resolution_of(m.group(1)), wall, os.path.join(out_dir, name)


def load_rgb(path):
    img = bpy.data.images.load(path, check_existing=False)
    w, h = img.size
    px = np.array(img.pixels[:], dtype=np.float64).reshape(h, w, 4)[:, :, :3]
    bpy.data.images.remove(img)
    return px


def rel_mse(img, ref):
    return float(np.mean((img - ref) ** 2 / (ref ** 2 + 1e-2)))


def time_to_reach(points, target):
    """Log-log interpolation of time at which relMSE falls to `target`."""
    pts = sorted(points)  # (time, err)
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        if e0 >= target >= e1 and e0 > 0 and e1 > 0:
            if e0 == e1:
                return t0
            a = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(t0) + a * (math.log(t1) - math.log(t0)))
    # Outside the measured range: extrapolate with MSE ∝ 1/time.
    t_last, e_last = pts[-1]
    return t_last * e_last / target


def main():
    args = parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    scene = setup_scene(args)
    glb = os.path.join(out, "exported.glb")
    export_gltf(glb)
    levels = [int(s) for s in args.spp.split(",")]

    # Rows: (spp, render time, its resolution, wall time, relMSE); times
    # are medians of `--repeat` renders (both renderers are deterministic
    # for a given seed, so the image, and its error, is the same each time).
    results = {"Cycles": [], "Tessera": [], "Tessera denoised": []}
    # Each image's relMSE against Cycles' reference too: one yardstick for
    # all, which also holds the two renderers' remaining difference.
    vs_cycles = {}
    cyc_ref = os.path.join(out, "cycles-ref.exr")
    render_cycles(scene, args.ref_spp, cyc_ref)
    _, _, _, tes_ref = render_tessera(args, glb, args.ref_spp, os.path.join(out, "tessera-ref"))
    refs = {"Cycles": load_rgb(cyc_ref), "Tessera": load_rgb(tes_ref)}
    refs["Tessera denoised"] = refs["Tessera"]
    repeat = max(1, args.repeat)
    for spp in levels:
        path = os.path.join(out, f"cycles-{spp}.exr")
        ts = [render_cycles(scene, spp, path) for _ in range(repeat)]
        t = median(ts)
        results["Cycles"].append((spp, t, PERF_COUNTER_RESOLUTION, t, rel_mse(load_rgb(path), refs["Cycles"])))
        vs_cycles[("Cycles", spp)] = results["Cycles"][-1][4]
        for name, denoise in [("Tessera", False), ("Tessera denoised", True)]:
            runs = [render_tessera(args, glb, spp, os.path.join(out, f"tessera-{spp}"), denoise) for _ in range(repeat)]
            res = max(r[1] for r in runs)
            img = load_rgb(runs[-1][3])
            results[name].append(
                (spp, median([r[0] for r in runs]), res, median([r[2] for r in runs]), rel_mse(img, refs[name]))
            )
            vs_cycles[(name, spp)] = rel_mse(img, refs["Cycles"])

    pixels = args.size * args.size
    print()
    print(f"Scene {os.path.basename(args.scene)} (imported and re-exported by Blender {bpy.app.version_string}), "
          f"{args.size}x{args.size}, {args.bounces} bounces, {args.threads} threads, references at {args.ref_spp} spp, "
          f"times are medians of {repeat} renders.")
    print()
    print("| renderer | spp | render time | paths/s | wall time | relMSE vs own reference | relMSE vs Cycles' reference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    untimed = []
    for name, rows in results.items():
        for spp, t, res, wall, err in rows:
            if timed(t, res):
                rate = f"{pixels * spp / t:,.0f}"
            else:
                rate = "— (too fast to time)"
                untimed.append((name, spp, t, res))
            print(f"| {name} | {spp} | {t:.3f} s | {rate} | {wall:.3f} s | {err:.5f} | {vs_cycles[(name, spp)]:.5f} |")
    print()
    ratio = refs["Tessera"].mean(axis=(0, 1)) / np.maximum(refs["Cycles"].mean(axis=(0, 1)), 1e-9)
    print(f"The two references: Tessera's against Cycles' relMSE {rel_mse(refs['Tessera'], refs['Cycles']):.5f}, "
          f"mean ratio R/G/B {ratio[0]:.3f} / {ratio[1]:.3f} / {ratio[2]:.3f}.")
    for name, spp, t, res in untimed:
        print(f"{name} at {spp} spp: {t:.3f} s is under {MIN_RESOLUTIONS} times the resolution of its time "
              f"({res:g} s), so no paths/s is derived from it and the time-to-quality figures leave it out.")
    mid = levels[len(levels) // 2]
    target = next(err for spp, _, _, _, err in results["Cycles"] if spp == mid)
    points = {
        name: [(t, e) for _, t, res, _, e in rows if timed(t, res)] for name, rows in results.items()
    }
    if all(len(p) >= 1 for p in points.values()):
        tc = time_to_reach(points["Cycles"], target)
        tt = time_to_reach(points["Tessera"], target)
        td = time_to_reach(points["Tessera denoised"], target)
        print(f"Time to reach Cycles' relMSE at {mid} spp ({target:.5f}), each against its own reference: Cycles "
              f"{tc:.3f} s, Tessera {tt:.3f} s (Tessera/Cycles = {tt / tc:.2f}), Tessera denoised {td:.3f} s "
              f"({td / tc:.2f}).")
    else:
        print("Time to reach equal quality: not computed, a renderer has no timed point.")
    print("Render time: Cycles' render operator (scene sync, BVH, sampling, writing the EXR), by time.perf_counter; "
          "Tessera's own report (sampling, frame assembly, denoising when asked, writing the EXR), to the decimals it "
          "prints. Wall time adds, for Tessera, process start, module load and scene parse.")


main()
