"""Tessera: render the scene on a Tessera farm from Render Properties.

Submit exports the scene with Blender's glTF exporter, uploads it through
the farm's HTTP API with the scene's frame range, resolution, camera and
colour management, follows the job in the panel, and saves the finished
frames where the scene's Output path says. See blender/README.md.
"""

bl_info = {
    "name": "Tessera render farm",
    "author": "Tessera",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Properties › Render › Tessera",
    "description": "Render the scene on a Tessera farm: export, upload, follow the job, download the frames",
    "category": "Render",
}

import os
import tempfile
import threading

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import job as scene_job
from .client import Client, TesseraError
from .runner import JobRun

ADDON = __package__

# The job being followed (one per Blender session), and its scene's name.
_active = {"run": None, "scene": None}


def prefs(context):
    return context.preferences.addons[ADDON].preferences


def client_for(context):
    p = prefs(context)
    url = p.url or os.environ.get("TESSERA_URL", "")
    token = p.token or os.environ.get("TESSERA_TOKEN", "")
    return Client(url, token)


class TesseraPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    url: StringProperty(name="Farm address", default="http://127.0.0.1:7878",
                        description="The coordinator's HTTP address (tessera coordinator --http)")
    token: StringProperty(name="API token", subtype="PASSWORD", default="",
                          description="An API token with the read and submit scopes (tessera token create --kind api --scope read,submit)")

    def draw(self, context):
        self.layout.prop(self, "url")
        self.layout.prop(self, "token")
        self.layout.label(text="Empty fields fall back to TESSERA_URL and TESSERA_TOKEN.")


def is_camera(_self, obj):
    return obj.type == "CAMERA"


class TesseraSceneSettings(bpy.types.PropertyGroup):
    samples: IntProperty(name="Samples", default=64, min=1, soft_max=4096, max=1 << 24,
                         description="Samples per pixel")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=is_camera,
                            description="Camera to render through (empty: the scene's camera)")
    view_transform: EnumProperty(
        name="View transform",
        items=[("SCENE", "From the scene", "Colour Management's view transform (AgX where the farm has no equivalent)"),
               ("AGX", "AgX", ""), ("FILMIC", "Filmic", ""), ("STANDARD", "Standard", "")],
        default="SCENE", description="How the PNG maps light to display values (EXR is always linear)")
    png: BoolProperty(name="PNG", default=True, description="Save an 8-bit PNG per frame")
    exr: BoolProperty(name="EXR", default=True, description="Save a linear float EXR per frame")
    denoise: BoolProperty(name="Denoise", default=True,
                          description="Also save each frame denoised (name.denoised.png/.exr); the raw frame is kept")
    progressive: BoolProperty(name="Progressive", default=False,
                              description="Render in sample passes (1, 4, 16, ... samples) so the farm's web page "
                                          "shows each whole frame early and refines it; the saved frames are the same")
    priority: IntProperty(name="Priority", default=0, description="Higher renders first")
    # The job being followed.
    job_id: IntProperty(name="Job", default=0)
    job_state: StringProperty(name="State", default="")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(name="Message", default="")


def report_later(message, level):
    """Shows `message` in the status bar from a timer (only operators can
    report): runs an operator whose only job is to report."""
    try:
        bpy.ops.tessera.report(message=message, level=level)
    except RuntimeError:
        pass  # an ERROR report raises in the caller too; it has been shown
    print(f"Tessera: {message}")


def redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def follow():
    """Timer: copies the running job's state into the scene's panel."""
    run = _active["run"]
    scene = bpy.data.scenes.get(_active["scene"] or "")
    if run is None or scene is None:
        return None
    state = run.state
    props = scene.tessera
    props.job_id = state["job_id"]
    props.job_state = state["phase"]
    props.progress = state["progress"]
    props.message = state["message"]
    redraw()
    if state["phase"] in ("done", "failed", "cancelled") or run.stop.is_set():
        _active["run"] = None
        if state["error"]:
            report_later(state["error"], "ERROR")
        elif state["phase"] == "done":
            report_later(state["message"], "INFO")
        return None
    return 0.5


class TESSERA_OT_report(bpy.types.Operator):
    """Shows a message in the status bar"""
    bl_idname = "tessera.report"
    bl_label = "Tessera message"
    bl_options = {"INTERNAL"}

    message: StringProperty()
    level: StringProperty(default="INFO")

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


class TESSERA_OT_submit(bpy.types.Operator):
    """Export the scene to glTF, render it on the Tessera farm and save the frames to the Output path"""
    bl_idname = "tessera.submit"
    bl_label = "Submit to Tessera"

    wait: BoolProperty(name="Wait", default=False, options={"SKIP_SAVE", "HIDDEN"},
                       description="Block until the frames are saved (always so in background mode)")

    @classmethod
    def poll(cls, context):
        return _active["run"] is None

    def execute(self, context):
        try:
            run = prepare(context)
        except (TesseraError, ValueError, RuntimeError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        props = context.scene.tessera
        if self.wait or bpy.app.background:
            run.run()
            state = run.state
            props.job_id, props.job_state, props.progress, props.message = (
                state["job_id"], state["phase"], state["progress"], state["message"])
            if state["error"]:
                self.report({"ERROR"}, state["error"])
                return {"CANCELLED"}
            self.report({"INFO"}, state["message"])
            return {"FINISHED"}
        start(run, context.scene)
        self.report({"INFO"}, props.message)
        return {"FINISHED"}


def prepare(context):
    """Reads the scene and exports it (main thread): a JobRun ready to go.
    Raises with the message for the status bar."""
    scene = context.scene
    client = client_for(context)
    settings = scene_job.settings_of(scene, scene.tessera)
    outputs = scene_job.output_paths(scene, settings["frames"])
    tmp = tempfile.mkdtemp(prefix="tessera-")
    path = os.path.join(tmp, "scene.glb")
    try:
        scene_job.export_glb(path)
    except (RuntimeError, OSError) as e:
        raise RuntimeError(f"Exporting the scene to glTF failed: {e}") from None
    props = scene.tessera
    props.job_id, props.progress, props.job_state = 0, 0.0, "uploading"
    props.message = f"Uploading {bytes_text(os.path.getsize(path))} to {client.url}…"
    return JobRun(client, path, settings, outputs, cleanup_dir=tmp)


def start(run, scene):
    """Runs `run` on a thread; a timer ([`follow`]) shows it in the panel."""
    _active["run"], _active["scene"] = run, scene.name
    threading.Thread(target=run.run, name="tessera-job", daemon=True).start()
    if not bpy.app.timers.is_registered(follow):
        bpy.app.timers.register(follow, first_interval=0.5)


def bytes_text(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


class TESSERA_OT_open_job(bpy.types.Operator):
    """Open the job's page on the farm's web page"""
    bl_idname = "tessera.open_job"
    bl_label = "Open job page"

    @classmethod
    def poll(cls, context):
        return context.scene.tessera.job_id > 0

    def execute(self, context):
        try:
            url = client_for(context).job_page(context.scene.tessera.job_id)
        except TesseraError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        bpy.ops.wm.url_open(url=url)
        return {"FINISHED"}


class TESSERA_OT_cancel(bpy.types.Operator):
    """Cancel the job on the farm"""
    bl_idname = "tessera.cancel"
    bl_label = "Cancel job"

    @classmethod
    def poll(cls, context):
        return context.scene.tessera.job_id > 0 and context.scene.tessera.job_state in ("queued", "running")

    def execute(self, context):
        props = context.scene.tessera
        try:
            client_for(context).cancel(props.job_id)
        except TesseraError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Job {props.job_id} cancelled")
        return {"FINISHED"}


class TESSERA_PT_render(bpy.types.Panel):
    bl_label = "Tessera"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        scene = context.scene
        props = scene.tessera
        p = prefs(context)
        layout.label(text=f"Farm: {p.url or os.environ.get('TESSERA_URL', 'not set')}", icon="WORLD")
        col = layout.column(align=True)
        col.prop(scene, "frame_start", text="Frame Start")
        col.prop(scene, "frame_end", text="End")
        col = layout.column(align=True)
        col.prop(scene.render, "resolution_x", text="Resolution X")
        col.prop(scene.render, "resolution_y", text="Y")
        col.prop(scene.render, "resolution_percentage", text="%")
        layout.prop(props, "samples")
        layout.prop(props, "camera")
        layout.prop(props, "view_transform")
        row = layout.row(heading="Files")
        row.prop(props, "png")
        row.prop(props, "exr")
        layout.prop(props, "denoise")
        layout.prop(props, "progressive")
        layout.prop(props, "priority")
        layout.prop(scene.render, "filepath", text="Output")
        layout.operator("tessera.submit", icon="RENDER_ANIMATION")
        if props.job_id or props.message:
            box = layout.box()
            if props.job_id:
                if hasattr(box, "progress"):  # Blender 4.0+
                    box.progress(factor=props.progress, type="BAR", text=f"Job {props.job_id}: {props.job_state}")
                else:
                    row = box.row()
                    row.enabled = False  # shown, not edited
                    row.prop(props, "progress", text=f"Job {props.job_id}: {props.job_state}", slider=True)
            if props.message:
                box.label(text=props.message)
            row = box.row()
            row.operator("tessera.open_job", icon="URL")
            row.operator("tessera.cancel", icon="CANCEL")


CLASSES = (TesseraPreferences, TesseraSceneSettings, TESSERA_OT_report, TESSERA_OT_submit,
           TESSERA_OT_open_job, TESSERA_OT_cancel, TESSERA_PT_render)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.tessera = PointerProperty(type=TesseraSceneSettings)


def unregister():
    run = _active["run"]
    if run is not None:
        run.stop.set()
    if bpy.app.timers.is_registered(follow):
        bpy.app.timers.unregister(follow)
    del bpy.types.Scene.tessera
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
