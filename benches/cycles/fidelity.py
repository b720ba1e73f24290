"""Does Tessera's frame look like Cycles' frame of the same .blend?

Run inside Blender (`cargo xtask fidelity` does this; the test suite runs a
small version, coordinator/tests/all/fidelity.rs):

    blender -b --factory-startup --python benches/cycles/fidelity.py -- \
        --tessera target/release/tessera --size 128 --spp 1024 --out target/fidelity

For each scene below (built here with bpy, so nothing binary lives in the
repository and every setting is written down):
1. builds the scene in an empty Blender file: geometry, Principled BSDF
   materials, Blender lights in watts, a world colour;
2. exports it with Blender's own glTF exporter (GLB, cameras, lights), as an
   artist would;
3. renders the .blend state with Cycles (CPU, no denoising, no adaptive
   sampling, no clamping, no light threshold, linear EXR) and the exported
   GLB with `tessera render` at the same resolution, samples and bounces,
   the world passed as `--background` (glTF has no world);
4. compares the linear EXR pixels: per-channel means over the frame, and
   per-channel means over each cell of a 4x4 grid.

The deviation of a region is |T - C| / max(C, floor) per channel, where the
floor is a tenth of the frame's mean over all channels: a cell that is
nearly black in both renders is compared against the frame's brightness,
not against its own near-zero mean, where noise alone would be a large
ratio. With `--check`, the run exits 1 when a frame mean deviates more than
`--max-frame` or a cell more than `--max-cell`.

What glTF (and so Tessera) cannot carry is kept out of the scenes on
purpose and listed in docs/fidelity.md: light radius (soft shadows), sun
angle, world textures, Blender-only shader nodes.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import bpy
import numpy as np
from mathutils import Vector

# Debian 12's Blender 3.4 glTF exporter still uses `np.bool`, which NumPy
# 1.24 (Debian's) removed: restore the alias it means.
if "bool" not in np.__dict__:
    np.bool = bool


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser()
    p.add_argument("--tessera", required=True)
    p.add_argument("--module", help="path tracer module for tessera render (default: its embedded one)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--spp", type=int, default=1024)
    p.add_argument("--bounces", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--scenes", default="", help="comma-separated scene names (default: all)")
    p.add_argument("--out", default="target/fidelity")
    p.add_argument("--check", action="store_true", help="exit 1 when a bound below is broken")
    p.add_argument("--max-frame", type=float, default=0.03)
    p.add_argument("--max-cell", type=float, default=0.05)
    p.add_argument("--json", help="also write the measurements here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# Scene building blocks


def material(name, base=(0.8, 0.8, 0.8), metallic=0.0, roughness=0.5, emission=None, strength=1.0,
             texture=None, normal_map=None, mapping=None, specular=None, specular_tint=None):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    nodes, links = m.node_tree.nodes, m.node_tree.links
    p = nodes["Principled BSDF"]
    p.inputs["Base Color"].default_value = (*base, 1.0)
    p.inputs["Metallic"].default_value = metallic
    p.inputs["Roughness"].default_value = roughness
    if emission is not None:
        p.inputs["Emission"].default_value = (*emission, 1.0)
        p.inputs["Emission Strength"].default_value = strength
    if specular is not None:
        p.inputs["Specular"].default_value = specular
    if specular_tint is not None:
        p.inputs["Specular Tint"].default_value = specular_tint
    if texture is not None:
        t = nodes.new("ShaderNodeTexImage")
        t.image = texture
        links.new(t.outputs["Color"], p.inputs["Base Color"])
        if mapping is not None:
            # UV -> Mapping -> image: the exporter writes KHR_texture_transform.
            uv = nodes.new("ShaderNodeTexCoord")
            mp = nodes.new("ShaderNodeMapping")
            for k, v in mapping.items():
                mp.inputs[k].default_value = v
            links.new(uv.outputs["UV"], mp.inputs["Vector"])
            links.new(mp.outputs["Vector"], t.inputs["Vector"])
    if normal_map is not None:
        t = nodes.new("ShaderNodeTexImage")
        t.image = normal_map
        t.image.colorspace_settings.name = "Non-Color"
        nm = nodes.new("ShaderNodeNormalMap")
        links.new(t.outputs["Color"], nm.inputs["Color"])
        links.new(nm.outputs["Normal"], p.inputs["Normal"])
    return m


def assign(obj, mat):
    obj.data.materials.clear()
    obj.data.materials.append(mat)
    return obj


def plane(size, location, rotation=(0, 0, 0), mat=None):
    bpy.ops.mesh.primitive_plane_add(size=size, location=location, rotation=rotation)
    return assign(bpy.context.object, mat)


def cube(size, location, rotation=(0, 0, 0), mat=None):
    bpy.ops.mesh.primitive_cube_add(size=size, location=location, rotation=rotation)
    return assign(bpy.context.object, mat)


def sphere(radius, location, mat=None):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=64, ring_count=32, radius=radius, location=location)
    bpy.ops.object.shade_smooth()
    return assign(bpy.context.object, mat)


def look_at(obj, target):
    direction = Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def camera(location, target, lens=35.0, ortho_scale=None):
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = lens
    if ortho_scale is not None:
        cam.data.type = "ORTHO"
        cam.data.ortho_scale = ortho_scale
    cam.data.sensor_fit = "AUTO"
    bpy.context.scene.collection.objects.link(cam)
    cam.location = location
    look_at(cam, target)
    bpy.context.scene.camera = cam
    return cam


def light(kind, name, location, energy, color=(1, 1, 1), target=None, **kw):
    data = bpy.data.lights.new(name, type=kind)
    data.energy = energy
    data.color = color
    # glTF's punctual lights are points: no radius (soft shadows) and no
    # sun angle cross the file, so the scenes use none.
    if kind == "SUN":
        data.angle = 0.0
    else:
        data.shadow_soft_size = 0.0
    for k, v in kw.items():
        setattr(data, k, v)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = location
    if target is not None:
        look_at(obj, target)
    return obj


def world(color, strength):
    scene = bpy.context.scene
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    scene.world.use_nodes = True
    bg = scene.world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (*color, 1.0)
    bg.inputs["Strength"].default_value = strength
    return {"background": color, "strength": strength}


def image(name, size, fn, non_color=False):
    """An image from fn(u, v) -> (r, g, b) in the file's encoding (sRGB for
    colour, raw for normal maps), packed so the exporter embeds it."""
    img = bpy.data.images.new(name, size, size, alpha=False)
    if non_color:
        img.colorspace_settings.name = "Non-Color"
    px = np.zeros((size, size, 4), dtype=np.float32)
    for y in range(size):
        for x in range(size):
            px[y, x, :3] = fn((x + 0.5) / size, (y + 0.5) / size)
            px[y, x, 3] = 1.0
    img.pixels[:] = px.ravel()
    img.file_format = "PNG"
    img.pack()
    return img


# ---------------------------------------------------------------------------
# The scenes. Each returns the world it set (for --background).


def box_point():
    """A Cornell-style box lit by one point light: light units (W -> cd ->
    W/sr), diffuse albedo, colour bleeding over several bounces."""
    white = material("White", (0.73, 0.73, 0.73), roughness=1.0)
    red = material("Red", (0.65, 0.05, 0.05), roughness=1.0)
    green = material("Green", (0.12, 0.45, 0.15), roughness=1.0)
    plane(2, (0, 0, 0), mat=white)  # floor
    plane(2, (0, 0, 2), (math.pi, 0, 0), mat=white)  # ceiling
    plane(2, (0, 1, 1), (math.pi / 2, 0, 0), mat=white)  # back
    plane(2, (-1, 0, 1), (0, math.pi / 2, 0), mat=red)
    plane(2, (1, 0, 1), (0, -math.pi / 2, 0), mat=green)
    cube(0.6, (0.3, 0.2, 0.3), (0, 0, 0.3), mat=white)
    light("POINT", "Lamp", (0, 0, 1.8), 60.0, color=(1.0, 0.9, 0.8))
    camera((0, -3.4, 1), (0, 0, 1), lens=35)
    return world((0, 0, 0), 0.0)


def sun_spheres():
    """A sun and a blue sky over spheres of the three Principled families:
    sun irradiance (W/m² -> lux -> W/m²), world lighting, GGX energy and
    Fresnel for metal, rough and glossy dielectrics."""
    ground = material("Ground", (0.5, 0.5, 0.5), roughness=0.8)
    gold = material("Gold", (1.0, 0.71, 0.29), metallic=1.0, roughness=0.35)
    blue = material("RoughBlue", (0.1, 0.25, 0.8), roughness=0.6)
    glossy = material("GlossyWhite", (0.9, 0.9, 0.9), roughness=0.15)
    plane(12, (0, 0, 0), mat=ground)
    sphere(0.5, (-1.1, 0, 0.5), mat=gold)
    sphere(0.5, (0, 0.3, 0.5), mat=blue)
    sphere(0.5, (1.1, 0, 0.5), mat=glossy)
    sun = light("SUN", "Sun", (0, 0, 5), 2.5, color=(1.0, 0.95, 0.85))
    sun.rotation_euler = (math.radians(40), 0, math.radians(30))
    camera((0, -4.2, 1.6), (0, 0, 0.45), lens=40)
    return world((0.25, 0.35, 0.55), 0.8)


def spot_emitter():
    """A spot light with a soft edge and an orange emissive panel: spot
    cone and blend, emission strength, lights with colour."""
    floor = material("Floor", (0.7, 0.7, 0.7), roughness=0.9)
    wall = material("Wall", (0.6, 0.65, 0.7), roughness=0.9)
    panel = material("Panel", (0.0, 0.0, 0.0), roughness=1.0, emission=(1.0, 0.45, 0.1), strength=4.0)
    plane(8, (0, 0, 0), mat=floor)
    plane(8, (0, 2, 2), (math.pi / 2, 0, 0), mat=wall)
    plane(0.8, (1.2, 1.5, 0.6), (math.pi / 2, 0, 0), mat=panel).scale = (1.0, 1.0, 1.0)
    sphere(0.35, (-0.4, 0.3, 0.35), mat=material("Clay", (0.8, 0.5, 0.35), roughness=0.7))
    light("SPOT", "Spot", (-0.3, -0.5, 3.0), 400.0, target=(-0.3, 0.4, 0.0),
          spot_size=math.radians(55), spot_blend=0.4)
    camera((0, -4.5, 2.2), (0, 0.5, 0.5), lens=32)
    return world((0, 0, 0), 0.0)


def textured():
    """A checker-textured floor with a normal-mapped panel under a low sun:
    sRGB decoding of colour textures, tangent-space normal maps (Blender
    exports no tangents by default), texture filtering."""

    def checker(u, v):
        on = (int(u * 8) + int(v * 8)) % 2 == 0
        return (0.85, 0.3, 0.1) if on else (0.9, 0.9, 0.85)

    def bumps(u, v):
        # A sinusoidal height field's tangent-space normals, +Y up.
        k = 2 * math.pi * 6
        dx, dy = 0.6 * math.cos(k * u), 0.6 * math.cos(k * v)
        n = np.array([-dx, -dy, 1.0])
        n /= np.linalg.norm(n)
        return tuple(n * 0.5 + 0.5)

    floor = material("Checker", texture=image("checker", 64, checker), roughness=0.8)
    panel = material("Bumpy", (0.75, 0.75, 0.75), roughness=0.7, normal_map=image("bumps", 128, bumps, True))
    plane(6, (0, 0, 0), mat=floor)
    plane(2.2, (0, 1.2, 1.1), (math.pi / 2, 0, 0), mat=panel)
    sun = light("SUN", "Sun", (0, 0, 5), 3.0)
    sun.rotation_euler = (math.radians(70), 0, math.radians(-35))
    camera((0, -4.0, 1.8), (0, 0.4, 0.6), lens=35)
    return world((0.3, 0.3, 0.32), 0.5)


def floor_point():
    """One point light over a white matte floor: the light units alone."""
    plane(20, (0, 0, 0), mat=material("Matte", (0.8, 0.8, 0.8), roughness=1.0))
    light("POINT", "Lamp", (0, 0, 2), 100.0)
    camera((0, -5, 3), (0, 0, 0), lens=30)
    return world((0, 0, 0), 0.0)


def floor_sun():
    """A sun over a white matte floor: sun irradiance alone."""
    plane(20, (0, 0, 0), mat=material("Matte", (0.8, 0.8, 0.8), roughness=1.0))
    sun = light("SUN", "Sun", (0, 0, 5), 2.0)
    sun.rotation_euler = (math.radians(30), 0, 0)
    camera((0, -5, 3), (0, 0, 0), lens=30)
    return world((0, 0, 0), 0.0)


def floor_world():
    """A white matte floor under a uniform world: world lighting alone."""
    plane(20, (0, 0, 0), mat=material("Matte", (0.8, 0.8, 0.8), roughness=1.0))
    camera((0, -5, 3), (0, 0, 0), lens=30)
    return world((0.4, 0.5, 0.6), 1.0)


def ortho_blocks():
    """Blocks on a floor seen through an orthographic camera under a sun:
    the orthographic projection (its scale and framing) and a shadowed
    grey-green-red palette."""
    plane(10, (0, 0, 0), mat=material("Floor", (0.6, 0.6, 0.6), roughness=0.9))
    for i, (c, h) in enumerate([((0.7, 0.2, 0.2), 0.8), ((0.2, 0.6, 0.25), 0.5), ((0.25, 0.3, 0.7), 1.1)]):
        cube(0.7, (-1.2 + 1.2 * i, 0.2 * i, 0.35), mat=material(f"Block{i}", c, roughness=0.6)).scale = (1, 1, h / 0.7)
    sun = light("SUN", "Sun", (0, 0, 5), 3.0)
    sun.rotation_euler = (math.radians(35), 0, math.radians(40))
    camera((4, -6, 5), (0, 0, 0.3), ortho_scale=5.0)
    return world((0.2, 0.22, 0.25), 1.0)


def mapped_specular():
    """A checker floor through a Mapping node (offset, rotation, scale:
    KHR_texture_transform) and dark glossy spheres with Blender's Specular
    0, 0.25 and 1 and a tinted one (KHR_materials_specular and _ior, which
    Blender 3's exporter writes for a Specular other than 0.5)."""

    def checker(u, v):
        on = (int(u * 4) + int(v * 4)) % 2 == 0
        return (0.2, 0.45, 0.8) if on else (0.9, 0.88, 0.8)

    mapping = {"Location": (0.15, 0.3, 0.0), "Rotation": (0.0, 0.0, math.radians(30)), "Scale": (2.5, 1.5, 1.0)}
    floor = material("Mapped", texture=image("checker4", 64, checker), roughness=0.8, mapping=mapping)
    plane(8, (0, 0, 0), mat=floor)
    for i, (spec, tint, base) in enumerate([
        (0.0, 0.0, (0.05, 0.05, 0.05)),
        (0.25, 0.0, (0.05, 0.05, 0.05)),
        (1.0, 0.0, (0.05, 0.05, 0.05)),
        (0.8, 1.0, (0.5, 0.12, 0.05)),
    ]):
        m = material(f"Spec{i}", base, roughness=0.3, specular=spec, specular_tint=tint)
        sphere(0.42, (-1.5 + i, 0.2, 0.42), mat=m)
    sun = light("SUN", "Sun", (0, 0, 5), 3.0, color=(1.0, 0.97, 0.9))
    sun.rotation_euler = (math.radians(50), 0, math.radians(-25))
    camera((0, -4.4, 1.7), (0, 0.2, 0.35), lens=38)
    return world((0.35, 0.4, 0.5), 0.6)


SCENES = {
    "floor_point": floor_point,
    "floor_sun": floor_sun,
    "floor_world": floor_world,
    "box_point": box_point,
    "sun_spheres": sun_spheres,
    "spot_emitter": spot_emitter,
    "textured": textured,
    "ortho_blocks": ortho_blocks,
    "mapped_specular": mapped_specular,
}


# ---------------------------------------------------------------------------
# Rendering and comparing


def setup_render(args):
    scene = bpy.context.scene
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = args.size
    r.resolution_percentage = 100
    r.threads_mode = "FIXED"
    r.threads = args.threads
    r.image_settings.file_format = "OPEN_EXR"
    r.image_settings.color_depth = "32"
    c = scene.cycles
    c.device = "CPU"
    c.samples = args.spp
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
    c.light_sampling_threshold = 0.0
    c.blur_glossy = 0.0
    c.caustics_reflective = True
    c.caustics_refractive = True
    c.seed = 0
    scene.view_settings.view_transform = "Standard"


def load_rgb(path):
    img = bpy.data.images.load(path, check_existing=False)
    w, h = img.size
    px = np.array(img.pixels[:], dtype=np.float64).reshape(h, w, 4)[:, :, :3]
    bpy.data.images.remove(img)
    return px


def compare(tes, cyc, grid):
    """Frame means, per-cell means and their deviations (see the module doc)."""
    frame_t, frame_c = tes.mean(axis=(0, 1)), cyc.mean(axis=(0, 1))
    floor = 0.1 * float(frame_c.mean())
    dev = lambda t, c: np.abs(t - c) / np.maximum(c, floor)
    h, w, _ = cyc.shape
    cells = []
    for gy in range(grid):
        for gx in range(grid):
            ys = slice(gy * h // grid, (gy + 1) * h // grid)
            xs = slice(gx * w // grid, (gx + 1) * w // grid)
            t, c = tes[ys, xs].mean(axis=(0, 1)), cyc[ys, xs].mean(axis=(0, 1))
            cells.append({"cell": (gx, grid - 1 - gy), "tessera": t.tolist(), "cycles": c.tolist(),
                          "deviation": float(dev(t, c).max())})
    ratio = (frame_t / np.maximum(frame_c, 1e-9)).tolist()
    worst = max(cells, key=lambda c: c["deviation"])
    return {
        "tessera_mean": frame_t.tolist(), "cycles_mean": frame_c.tolist(), "ratio": ratio,
        "frame_deviation": float(dev(frame_t, frame_c).max()), "worst_cell": worst, "cells": cells,
    }


def run_scene(args, name, build, out):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    w = build()
    setup_render(args)
    scene = bpy.context.scene
    glb = os.path.join(out, f"{name}.glb")
    bpy.ops.export_scene.gltf(filepath=glb, export_format="GLB", export_cameras=True, export_lights=True,
                              export_apply=True)
    cyc_path = os.path.join(out, f"{name}-cycles.exr")
    scene.render.filepath = cyc_path
    bpy.ops.render.render(write_still=True)
    bg = w["background"]
    cmd = [
        args.tessera, "render", glb, "--frames", "1", "--width", str(args.size), "--height", str(args.size),
        "--spp", str(args.spp), "--bounces", str(args.bounces), "--format", "exr", "--threads", str(args.threads),
        "--background", ",".join(f"{v:g}" for v in bg), "--background-strength", f"{w['strength']:g}",
        "--out", os.path.join(out, f"{name}-tessera"),
    ]
    if args.module:
        cmd += ["--module", args.module]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    tes_path = os.path.join(out, f"{name}-tessera", f"{name}-0001.exr")
    return compare(load_rgb(tes_path), load_rgb(cyc_path), args.grid)


def main():
    args = parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    names = [s for s in args.scenes.split(",") if s] or list(SCENES)
    unknown = [n for n in names if n not in SCENES]
    if unknown:
        raise SystemExit(f"unknown scene(s) {unknown}; known: {list(SCENES)}")
    results = {name: run_scene(args, name, SCENES[name], out) for name in names}

    print()
    print(f"Tessera / Cycles (Blender {bpy.app.version_string}), {args.size}x{args.size}, {args.spp} spp, "
          f"{args.bounces} bounces; deviation = |T - C| / max(C, frame mean / 10), worst channel.")
    print()
    print("| scene | mean ratio R / G / B | frame deviation | worst cell (x, y from bottom left) | cell deviation |")
    print("| --- | --- | ---: | --- | ---: |")
    failed = []
    for name, r in results.items():
        ratio = " / ".join(f"{v:.3f}" for v in r["ratio"])
        wc = r["worst_cell"]
        print(f"| {name} | {ratio} | {100 * r['frame_deviation']:.1f} % | {tuple(wc['cell'])} | "
              f"{100 * wc['deviation']:.1f} % |")
        if r["frame_deviation"] > args.max_frame:
            failed.append(f"{name}: frame means deviate {100 * r['frame_deviation']:.1f} % "
                          f"(Tessera {r['tessera_mean']}, Cycles {r['cycles_mean']}), bound {100 * args.max_frame:g} %")
        if wc["deviation"] > args.max_cell:
            failed.append(f"{name}: cell {tuple(wc['cell'])} deviates {100 * wc['deviation']:.1f} % "
                          f"(Tessera {wc['tessera']}, Cycles {wc['cycles']}), bound {100 * args.max_cell:g} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print()
    for line in failed:
        print("FIDELITY:", line)
    if args.check and failed:
        sys.exit(1)


main()
