"""Headless test of the add-on against a live farm (coordinator/tests/all/
blender.rs runs it):

    blender -b --factory-startup --python-exit-code 1 --python blender/tests/submit_test.py -- \
        --zip target/blender/tessera-blender-0.1.0.zip --url http://127.0.0.1:7878 --token ta_… --out DIR

It installs the add-on zip as a user would, builds a small animated scene,
checks the failures an artist can meet (unreachable farm, refused token, a
refused setting) come back as clear errors, then submits for real and
checks the frames landed in the Output path. It prints `RESULT {json}` for
the caller.
"""

import argparse
import json
import os
import sys

import bpy


def args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser()
    p.add_argument("--zip", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def build_scene(out):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 36, 100
    scene.render.fps = 24
    scene.render.filepath = os.path.join(out, "shot_")
    bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
    bpy.ops.mesh.primitive_cube_add(size=1, location=(-1, 0, 0.5))
    cube = bpy.context.object
    cube.keyframe_insert("location", frame=1)
    cube.location = (1, 0, 0.5)
    cube.keyframe_insert("location", frame=3)
    material = bpy.data.materials.new("Orange")
    material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.3, 0.05, 1)
    cube.data.materials.append(material)
    bpy.ops.object.light_add(type="POINT", location=(2, -2, 4))
    bpy.context.object.data.energy = 800
    bpy.ops.object.camera_add(location=(0, -6, 2.5), rotation=(1.2, 0, 0))
    bpy.context.object.name = "Shot camera"
    scene.camera = bpy.context.object
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.07, 0.1, 1)
    scene.world = world
    return scene


class FakeLayout:
    """Stands in for Blender's UILayout (none exists in background mode):
    records what the panel draws, and checks every property it names exists."""

    def __init__(self, drawn):
        self.drawn = drawn

    def prop(self, data, name, **_):
        assert hasattr(data, name), f"the panel draws a property that does not exist: {name}"
        self.drawn.append(("prop", name))

    def operator(self, idname, **_):
        module, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), op), f"the panel names an unknown operator: {idname}"
        self.drawn.append(("operator", idname))

    def label(self, text="", **_):
        self.drawn.append(("label", text))

    def progress(self, **kw):
        self.drawn.append(("progress", kw.get("text", "")))

    def __getattr__(self, name):
        # row(), column(), box() and flags like use_property_split.
        return lambda *a, **k: self

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)


def draw_ui(addon, prefs):
    """Draws the panel and the preferences into a fake layout, before and
    after a job exists, so a typo in a property name fails the test."""
    for job in (0, 7):
        bpy.context.scene.tessera.job_id = job
        bpy.context.scene.tessera.message = "Job 7: running" if job else ""
        drawn = []
        panel = type("Panel", (), {"layout": FakeLayout(drawn)})()
        addon.TESSERA_PT_render.draw(panel, bpy.context)
        names = [n for kind, n in drawn if kind == "operator"]
        assert "tessera.submit" in names, drawn
        assert ("tessera.open_job" in names) == bool(job), drawn
    bpy.context.scene.tessera.job_id = 0
    bpy.context.scene.tessera.message = ""
    drawn = []
    addon.TesseraPreferences.draw(type("P", (), {"layout": FakeLayout(drawn), "url": "", "token": ""})(), bpy.context)
    assert ("prop", "url") in drawn and ("prop", "token") in drawn, drawn
    print("ok: the panel and preferences draw")


def expect_error(what, needle):
    try:
        bpy.ops.tessera.submit(wait=True)
    except RuntimeError as e:
        message = str(e)
        assert needle.lower() in message.lower(), f"{what}: {message!r} does not mention {needle!r}"
        print(f"ok: {what}: {message.strip()}")
        return message.strip()
    raise AssertionError(f"{what}: the submission did not fail")


def main():
    a = args()
    scene = build_scene(a.out)  # factory settings first: they would disable the add-on
    bpy.ops.preferences.addon_install(filepath=os.path.abspath(a.zip), overwrite=True)
    bpy.ops.preferences.addon_enable(module="tessera")
    prefs = bpy.context.preferences.addons["tessera"].preferences
    scene = bpy.context.scene
    assert hasattr(scene, "tessera"), "the add-on registers its scene settings"
    draw_ui(sys.modules["tessera"], prefs)
    scene.tessera.samples = 4
    errors = {}

    prefs.url, prefs.token = "http://127.0.0.1:9", a.token
    errors["unreachable"] = expect_error("an unreachable farm", "cannot reach")
    prefs.url, prefs.token = a.url, "ta_wrong"
    errors["token"] = expect_error("a wrong token", "token")
    prefs.token = a.token
    scene.tessera.samples = 1 << 21
    errors["refused"] = expect_error("samples over the farm's limit", "spp")
    scene.tessera.samples = 4
    cam, scene.camera = scene.camera, None
    errors["camera"] = expect_error("no camera", "camera")
    scene.camera = cam

    result = bpy.ops.tessera.submit(wait=True)
    assert "FINISHED" in result, result
    props = scene.tessera
    assert props.job_state == "done", props.job_state
    saved = sorted(f for f in os.listdir(a.out) if f.startswith("shot_"))
    # Denoised by default (the panel's checkbox): raw and denoised files.
    exts = ("exr", "png", "denoised.exr", "denoised.png")
    want = [f"shot_{n:04d}.{ext}" for n in (1, 2, 3) for ext in exts]
    assert saved == sorted(want), saved
    sync_job = props.job_id

    # The interactive path: the job runs on a thread and the panel's timer
    # (called here by hand: background Blender runs no timers while a
    # script runs) follows it to the end.
    import time
    addon = sys.modules["tessera"]
    live = os.path.join(a.out, "live")
    scene.render.filepath = os.path.join(live, "take_")
    scene.tessera.denoise = False
    # In sample passes: the frames saved are the one-pass job's, bit for bit.
    scene.tessera.progressive = True
    run = addon.prepare(bpy.context)
    addon.start(run, scene)
    seen = set()
    deadline = time.time() + 300
    while addon.follow() is not None:
        seen.add(props.job_state)
        assert time.time() < deadline, f"the threaded job did not finish: {props.message}"
        time.sleep(0.2)
    assert props.job_state == "done", (props.job_state, props.message)
    assert props.progress == 1.0 and props.job_id == sync_job + 1, (props.progress, props.job_id)
    taken = sorted(os.listdir(live))
    assert taken == sorted(f"take_{n:04d}.{ext}" for n in (1, 2, 3) for ext in ("exr", "png")), taken
    for n in (1, 2, 3):
        with open(os.path.join(live, f"take_{n:04d}.png"), "rb") as p, \
                open(os.path.join(a.out, f"shot_{n:04d}.png"), "rb") as s:
            assert p.read() == s.read(), f"frame {n}: the progressive job's PNG differs from the one-pass job's"
    print("RESULT " + json.dumps({"job": sync_job, "threaded_job": props.job_id, "files": saved,
                                  "states": sorted(seen), "errors": errors, "message": props.message}))


main()
