#!/usr/bin/env python3
"""Packs a `videoagent dataset` folder small enough to carry to a GPU machine, and unpacks it.

PNG frames barely compress further, but a video's raw frames do (the scene changes little
between frames): each episode's RGB frames become one uint8 array [frames, height, width, 3]
inside an xz tar, about 1 KB per 64 px MetaWorld frame instead of 6 KB of PNG. The JSON files
travel as they are; segmentation frames are left out (training reads RGB only).

    python3 scripts/frames_pack.py pack DATASET OUT.tar.xz
    python3 scripts/frames_pack.py unpack IN.tar.xz DATASET

Needs numpy and Pillow (the GPU machine's Python has both; so does the MetaWorld venv).
"""
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(src: Path, out: Path):
    manifest = json.loads((src / "manifest.json").read_text())
    with tarfile.open(out, "w:xz", preset=6) as tar:
        add_bytes(tar, "manifest.json", (src / "manifest.json").read_bytes())
        for ep in manifest["episodes"]:
            d = src / ep["dir"]
            for name in ("meta.json", "actions.json", "states.json"):
                if (d / name).exists():
                    add_bytes(tar, f"{ep['dir']}/{name}", (d / name).read_bytes())
            frames = [np.asarray(Image.open(d / f"rgb/{i:05}.png").convert("RGB"))
                      for i in range(ep["frames"])]
            buf = io.BytesIO()
            np.save(buf, np.stack(frames))
            add_bytes(tar, f"{ep['dir']}/rgb.npy", buf.getvalue())
    print(f"packed {len(manifest['episodes'])} episodes into {out} ({out.stat().st_size} bytes)")


def unpack(archive: Path, dest: Path):
    dest.mkdir(parents=True, exist_ok=False)
    count = 0
    with tarfile.open(archive, "r:xz") as tar:
        for member in tar:
            path = Path(member.name)
            if path.is_absolute() or ".." in path.parts or not member.isfile():
                raise SystemExit(f"refusing archive entry {member.name!r}")
            data = tar.extractfile(member).read()
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.name == "rgb.npy":
                (target.parent / "rgb").mkdir()
                for i, frame in enumerate(np.load(io.BytesIO(data))):
                    Image.fromarray(frame).save(target.parent / f"rgb/{i:05}.png")
                count += 1
            else:
                target.write_bytes(data)
    print(f"unpacked {count} episodes into {dest}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        raise SystemExit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]), Path(sys.argv[3]))


if __name__ == "__main__":
    main()
