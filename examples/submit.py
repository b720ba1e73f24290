#!/usr/bin/env python3
"""Submit a scene to a Tessera farm, wait for it, and download its frames.

Python 3 standard library only: this file documents the HTTP API
(docs/api.md) as much as it is a tool. `tessera submit --download DIR` does
the same, and verifies each file's blake3 too.

    python3 examples/submit.py --url http://127.0.0.1:7878 --token ta_... \\
        scene.glb --frames 1-3 --width 640 --height 360 --spp 16 --out frames/
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


def request(args, method, path, body=None, content_type=None):
    """One API call; returns the response. A non-2xx status exits with the server's message."""
    req = urllib.request.Request(args.url.rstrip("/") + path, data=body, method=method)
    req.add_header("Authorization", "Bearer " + args.token)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        return urllib.request.urlopen(req)
    except urllib.error.HTTPError as e:  # errors are {"error": ..., "code": ...}
        try:
            message = json.load(e)["error"]
        except Exception:
            message = e.reason
        sys.exit(f"{method} {path}: {e.code} {message}")
    except urllib.error.URLError as e:
        sys.exit(f"cannot reach {args.url}: {e.reason}")


def get_json(args, path):
    with request(args, "GET", path) as r:
        return json.load(r)


def multipart(fields):
    """multipart/form-data from (name, file name or None, content type, bytes) tuples."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, file_name, content_type, data in fields:
        disposition = f'form-data; name="{name}"'
        if file_name:
            disposition += f'; filename="{file_name}"'
        body += (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("TESSERA_URL", "http://127.0.0.1:7878"))
    p.add_argument("--token", default=os.environ.get("TESSERA_TOKEN"))
    p.add_argument("scene", help="a .glb, or a .gltf with everything embedded")
    p.add_argument("--frames", help='e.g. "1-48" or "1,5,9-12"')
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--spp", type=int)
    p.add_argument("--out", required=True, help="directory for the frames")
    args = p.parse_args()
    if not args.token:
        sys.exit("no API token: pass --token or set TESSERA_TOKEN")

    # Submit: the scene and a JSON object of settings; keys left out take the farm's defaults.
    settings = {k: getattr(args, k) for k in ("frames", "width", "height", "spp") if getattr(args, k) is not None}
    with open(args.scene, "rb") as f:
        scene = f.read()
    body, content_type = multipart([
        ("scene", os.path.basename(args.scene), "application/octet-stream", scene),
        ("settings", None, "application/json", json.dumps(settings).encode()),
    ])
    with request(args, "POST", "/api/v1/jobs", body, content_type) as r:
        job = json.load(r)
    print(f"job {job['id']} submitted: {job['name']}")

    # Wait: poll the job until it is done, failed or cancelled.
    while job["state"] not in ("done", "failed", "cancelled"):
        time.sleep(0.5)
        job = get_json(args, f"/api/v1/jobs/{job['id']}")
        pr = job["progress"]
        print(f"\r{job['state']}: {pr['tiles_done']}/{pr['tiles']} tiles, "
              f"{pr['frames_done']}/{pr['frames']} frames", end="", flush=True)
    print()
    if job["state"] != "done":
        sys.exit(f"job {job['id']} {job['state']}: {job['error']}")

    # Download: every file of every frame, named <stem>-NNNN.<ext> as `tessera render` names them.
    listing = get_json(args, f"/api/v1/jobs/{job['id']}/frames")
    stem = listing["stem"]
    if not stem.strip(".") or "/" in stem or "\\" in stem:
        sys.exit(f"refusing the file name stem {stem!r}")
    os.makedirs(args.out, exist_ok=True)
    for frame in listing["frames"]:
        for ext, file in frame["files"].items():
            path = os.path.join(args.out, f"{stem}-{frame['frame']:04}.{ext}")
            with request(args, "GET", file["url"]) as r:
                data = r.read()
            if len(data) != file["bytes"]:  # blake3 is not in the standard library
                sys.exit(f"{file['url']}: got {len(data)} bytes, the listing says {file['bytes']}")
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
            print(path)


if __name__ == "__main__":
    main()
