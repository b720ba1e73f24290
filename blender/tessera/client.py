"""The farm's HTTP API (docs/api.md), with the standard library only: the
add-on must run in any Blender's bundled Python without installing anything.

Every failure is a TesseraError whose message is what the artist reads in
the status bar: it names the farm, and for refusals the server's reason.
"""

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid

TIMEOUT = 30.0
# Uploads of large scenes take longer than a status request.
UPLOAD_TIMEOUT = 600.0


class TesseraError(Exception):
    """A failure to show the artist as is."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url, token):
        url = (url or "").strip().rstrip("/")
        if not url:
            raise TesseraError("Set the farm's address in the Tessera add-on preferences")
        if "://" not in url:
            url = "http://" + url
        if not (token or "").strip():
            raise TesseraError("Set an API token in the Tessera add-on preferences (tessera token create --kind api --scope read,submit)")
        self.url = url
        self.token = token.strip()

    def _request(self, method, path, body=None, headers=None, timeout=TIMEOUT):
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise TesseraError(self._explain(e), e.code) from None
        except urllib.error.URLError as e:
            raise TesseraError(f"Cannot reach the farm at {self.url}: {e.reason}") from None
        except (TimeoutError, OSError) as e:
            raise TesseraError(f"Cannot reach the farm at {self.url}: {e}") from None

    def _explain(self, e):
        try:
            message = json.loads(e.read().decode("utf-8", "replace")).get("error") or e.reason
        except (ValueError, AttributeError, OSError):
            message = e.reason
        if e.code == 401:
            return f"The farm at {self.url} refused the API token: {message}"
        if e.code == 403:
            return f"The API token may not do this: {message}"
        if e.code == 413:
            return f"The scene is larger than the farm accepts: {message}"
        if e.code == 422:
            return f"The farm refused the job: {message}"
        return f"The farm answered {e.code}: {message}"

    def json(self, method, path, body=None, headers=None, timeout=TIMEOUT):
        with self._request(method, path, body, headers, timeout) as response:
            data = response.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise TesseraError(f"{self.url}{path} did not answer JSON: is this a Tessera coordinator?") from None

    def submit(self, scene_path, settings):
        """Uploads the scene with its settings; returns the Job."""
        boundary = "tessera-" + uuid.uuid4().hex
        with open(scene_path, "rb") as f:
            scene = f.read()
        name = os.path.basename(scene_path)
        parts = [
            (f'Content-Disposition: form-data; name="settings"\r\nContent-Type: application/json\r\n\r\n').encode()
            + json.dumps(settings).encode(),
            (f'Content-Disposition: form-data; name="scene"; filename="{name}"\r\n'
             "Content-Type: model/gltf-binary\r\n\r\n").encode() + scene,
        ]
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
        body += b"--" + boundary.encode() + b"--\r\n"
        headers = {"Content-Type": "multipart/form-data; boundary=" + boundary}
        return self.json("POST", "/api/v1/jobs", body, headers, timeout=UPLOAD_TIMEOUT)

    def job(self, job_id):
        return self.json("GET", f"/api/v1/jobs/{int(job_id)}")

    def cancel(self, job_id):
        return self.json("POST", f"/api/v1/jobs/{int(job_id)}/cancel")

    def frames(self, job_id):
        return self.json("GET", f"/api/v1/jobs/{int(job_id)}/frames")

    def download(self, path, dest):
        """Saves an API file to `dest` through a temporary and a rename, so
        a half-written frame never sits at the final name."""
        directory = os.path.dirname(dest) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tessera-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out, self._request("GET", path, timeout=UPLOAD_TIMEOUT) as response:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def job_page(self, job_id):
        return f"{self.url}/#/jobs/{int(job_id)}"
