#!/usr/bin/env python3
"""Builds the Blender add-on zips (`cargo xtask blender-addon` runs this):

- `tessera-blender-VERSION.zip`: a `tessera/` folder, for Blender 3.4–4.x
  (Preferences › Add-ons › Install…; in 4.2+ "Install from Disk" takes it
  as a legacy add-on);
- `tessera-blender-extension-VERSION.zip`: the same files with
  `blender_manifest.toml` at the root, Blender 4.2+'s extension format.

Entries are written in sorted order with a fixed timestamp, so the same
sources give the same bytes.
"""

import argparse
import ast
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "tessera")
EPOCH = (2026, 1, 1, 0, 0, 0)


def version():
    tree = ast.parse(open(os.path.join(SOURCE, "__init__.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "bl_info" for t in node.targets):
            return ".".join(str(v) for v in ast.literal_eval(node.value)["version"])
    raise SystemExit("bl_info has no version")


def files():
    for name in sorted(os.listdir(SOURCE)):
        if name.endswith(".py"):
            yield name, os.path.join(SOURCE, name)


def write(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, src in entries:
            info = zipfile.ZipInfo(arcname, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(src, "rb") as f:
                z.writestr(info, f.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "target", "blender"))
    out = os.path.abspath(parser.parse_args().out)
    os.makedirs(out, exist_ok=True)
    v = version()
    manifest = open(os.path.join(HERE, "blender_manifest.toml"), encoding="utf-8").read()
    if f'\nversion = "{v}"\n' not in manifest:
        raise SystemExit(f"blender_manifest.toml's version is not bl_info's {v}")
    legacy = os.path.join(out, f"tessera-blender-{v}.zip")
    extension = os.path.join(out, f"tessera-blender-extension-{v}.zip")
    write(legacy, [(f"tessera/{name}", src) for name, src in files()])
    write(extension, [("blender_manifest.toml", os.path.join(HERE, "blender_manifest.toml"))] + list(files()))
    print(legacy)
    print(extension)


if __name__ == "__main__":
    sys.exit(main())
