"""What a submission is made of, read from the Blender scene on the main
thread: the glTF export, the job's settings, and where each frame's files go.
Nothing here talks to the farm."""

import os

import bpy

# Blender's glTF exporter options the path tracer needs (the rest keep
# Blender's defaults). Options a Blender version lacks are left out.
EXPORT_OPTIONS = {
    "export_format": "GLB",
    "export_cameras": True,
    "export_lights": True,          # KHR_lights_punctual
    "export_apply": True,           # modifiers applied, as rendered
    "export_animations": True,
    "export_frame_range": True,     # only the playback range
    "export_force_sampling": True,  # baked, so constraints and drivers come along
    "export_materials": "EXPORT",
    "export_image_format": "AUTO",
    "export_texcoords": True,
    "export_normals": True,
    "export_yup": True,
    "export_extras": False,
    "export_draco_mesh_compression_enable": False,  # the path tracer reads plain meshes only
    "use_renderable": True,         # what renders, not what the viewport hides
    "use_selection": False,
    "use_active_scene": True,
}

VIEW_TRANSFORMS = {"standard": "standard", "filmic": "filmic", "agx": "agx"}


def numpy_compat():
    """Debian 12's Blender 3.4 glTF add-on still uses `np.bool`, which NumPy
    1.24 removed: restore the alias it means."""
    try:
        import numpy as np
    except ImportError:
        return
    if "bool" not in np.__dict__:
        np.bool = bool


def export_glb(path):
    """Exports the current scene as one GLB at `path` with Blender's own
    exporter."""
    numpy_compat()
    known = bpy.ops.export_scene.gltf.get_rna_type().properties.keys()
    options = {k: v for k, v in EXPORT_OPTIONS.items() if k in known}
    result = bpy.ops.export_scene.gltf(filepath=path, **options)
    if "FINISHED" not in result or not os.path.isfile(path):
        raise RuntimeError("Blender's glTF exporter did not write the scene")


def camera_of(scene, props):
    camera = props.camera or scene.camera
    if camera is None or camera.type != "CAMERA":
        return None
    return camera


def frames_of(scene):
    """The playback range with its step, as a list (the API's form that
    takes any frame numbers, negative ones too)."""
    return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))


def resolution_of(scene):
    r = scene.render
    scale = r.resolution_percentage / 100.0
    return max(1, int(r.resolution_x * scale)), max(1, int(r.resolution_y * scale))


def view_transform_of(scene, props):
    if props.view_transform != "SCENE":
        return props.view_transform.lower()
    name = scene.view_settings.view_transform.lower()
    # Blender's "Filmic", "Standard", "AgX"; anything else (e.g. "Raw",
    # "Khronos PBR Neutral") has no equivalent on the farm: AgX, its default.
    return VIEW_TRANSFORMS.get(name, "agx")


def background_of(scene):
    """The world's colour and strength, if the world is a plain colour (a
    texture-driven world cannot be sent; the farm's default is used)."""
    world = scene.world
    if world is None:
        return None
    if world.use_nodes and world.node_tree:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                color = node.inputs["Color"]
                if color.is_linked:
                    return None
                return list(color.default_value[:3]), float(node.inputs["Strength"].default_value)
        return None
    return list(world.color[:3]), 1.0


def bounces_of(scene):
    cycles = getattr(scene, "cycles", None)
    return int(getattr(cycles, "max_bounces", 8)) if cycles else 8


def job_name(scene):
    blend = bpy.data.filepath
    stem = os.path.splitext(os.path.basename(blend))[0] if blend else "untitled"
    return f"{stem} – {scene.name}" if len(bpy.data.scenes) > 1 else stem


def settings_of(scene, props):
    """The job's settings (docs/api.md) as the scene and the panel say."""
    camera = camera_of(scene, props)
    if camera is None:
        raise ValueError("The scene has no camera: set one in Scene Properties or in the Tessera panel")
    width, height = resolution_of(scene)
    formats = [f for f, on in (("png", props.png), ("exr", props.exr)) if on]
    if not formats:
        raise ValueError("Choose at least one of PNG and EXR in the Tessera panel")
    settings = {
        "name": job_name(scene),
        "frames": frames_of(scene),
        "width": width,
        "height": height,
        "spp": int(props.samples),
        "camera": camera.name,
        "fps": scene.render.fps / (scene.render.fps_base or 1.0),
        "view_transform": view_transform_of(scene, props),
        "exposure": float(scene.view_settings.exposure),
        "bounces": bounces_of(scene),
        "formats": formats,
        "priority": int(props.priority),
        "denoise": bool(props.denoise),
        "progressive": bool(props.progressive),
    }
    background = background_of(scene)
    if background is not None:
        settings["background"], settings["background_strength"] = background
    return settings


def output_paths(scene, frames):
    """Where each frame's files go, Blender's way: `render.frame_path`
    (the Output path with its `#` padding and frame number), without the
    extension, which each format adds."""
    out = {}
    for frame in frames:
        path = bpy.path.abspath(scene.render.frame_path(frame=frame))
        out[frame] = os.path.splitext(path)[0]
    return out
