"""One submission from upload to frames on disk, runnable on a thread: it
never touches `bpy` (Blender's data is main-thread only); the panel reads
its `state` from a timer. The same `run` serves headless use, where it
simply runs to the end on the calling thread."""

import os
import threading
import time

from .client import TesseraError

POLL_SECONDS = 1.0


class JobRun:
    def __init__(self, client, scene_path, settings, outputs, cleanup_dir=None):
        self.client = client
        self.scene_path = scene_path
        self.settings = settings
        self.outputs = outputs  # frame -> path without extension
        self.cleanup_dir = cleanup_dir
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._state = {"phase": "uploading", "job_id": 0, "progress": 0.0, "message": "Uploading the scene…",
                       "error": None, "saved": []}

    @property
    def state(self):
        with self._lock:
            return dict(self._state)

    def _set(self, **changes):
        with self._lock:
            self._state.update(changes)

    def run(self):
        try:
            self._run()
        except TesseraError as e:
            self._set(phase="failed", error=str(e), message=str(e))
        except OSError as e:
            self._set(phase="failed", error=f"Saving frames failed: {e}", message=f"Saving frames failed: {e}")
        finally:
            if self.cleanup_dir:
                for name in os.listdir(self.cleanup_dir):
                    try:
                        os.unlink(os.path.join(self.cleanup_dir, name))
                    except OSError:
                        pass
                try:
                    os.rmdir(self.cleanup_dir)
                except OSError:
                    pass

    def _run(self):
        job = self.client.submit(self.scene_path, self.settings)
        job_id = job["id"]
        self._set(phase=job["state"], job_id=job_id, message=f"Job {job_id} submitted")
        while True:
            if self.stop.is_set():
                return
            p = job["progress"]
            eta = p.get("eta_s")
            message = f"Job {job_id}: {job['state']}, {p['frames_done']}/{p['frames']} frames, {int(p['fraction'] * 100)} %"
            if eta is not None and job["state"] == "running":
                message += f", about {int(eta)} s left"
            self._set(phase=job["state"], progress=float(p["fraction"]), message=message)
            if job["state"] == "done":
                break
            if job["state"] in ("failed", "cancelled"):
                error = f"Job {job_id} {job['state']}" + (f": {job['error']}" if job.get("error") else "")
                self._set(error=error, message=error)
                return
            time.sleep(POLL_SECONDS)
            job = self.client.job(job_id)
        self._set(phase="downloading", message=f"Job {job_id} done: downloading frames…")
        saved = []
        listing = self.client.frames(job_id)
        for frame in listing["frames"]:
            base = self.outputs.get(frame["frame"])
            if base is None:
                continue
            for ext, info in sorted(frame["files"].items()):
                dest = f"{base}.{ext}"
                self.client.download(info["url"], dest)
                saved.append(dest)
                self._set(message=f"Job {job_id}: saved {os.path.basename(dest)}")
        where = os.path.dirname(saved[0]) if saved else "nowhere"
        self._set(phase="done", progress=1.0, saved=saved,
                  message=f"Job {job_id} done: {len(saved)} files saved to {where}")
