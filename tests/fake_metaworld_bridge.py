"""A fake MetaWorld bridge for tests: the protocol of python/metaworld_bridge.py without
MetaWorld (plain Python, no packages), plus ways to misbehave on purpose.

Misbehaviour is chosen by the FAKE_BRIDGE environment variable (comma-separated):
  protocol=N        answer hello with protocol N
  import_error=MSG  answer hello as a bridge whose packages are missing
  hang_hello        never answer hello
and by a step's first action component (so a World can trigger it through step):
  0.5 hang, 0.625 die halfway through a reply, 0.75 write a garbage line, 0.875 exit quietly
(values a 32-bit float carries exactly).
"""

import json
import os
import sys
import time

OPTIONS = dict(
    (kv.split("=", 1) + [""])[:2] for kv in os.environ.get("FAKE_BRIDGE", "").split(",") if kv
)
out = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)


def send(header, arrays=()):
    header["payloads"] = [
        {"name": n, "dtype": d, "shape": s, "bytes": len(b)} for n, d, s, b in arrays
    ]
    out.write(json.dumps(header).encode() + b"\n" + b"".join(a[3] for a in arrays))


size = 32
steps = 0
hand = [0.0, 0.6, 0.2]


def frames():
    rgb = bytes([steps % 256, 100, 200]) * (size * size)
    seg = bytes([0] * (size * size // 2) + [3] * (size * size - size * size // 2))
    return [
        ("rgb", "u1", [size, size, 3], rgb),
        ("segmentation", "u1", [size, size], seg),
    ]


def state():
    return {
        "hand": hand,
        "grip": -1.0,
        "gripper_opening": 1.0,
        "object": [0.1, 0.7, 0.02],
        "object_quat": [1.0, 0.0, 0.0, 0.0],
        "steps": steps,
        "success": steps >= 3,
        "labels": ["background", "robot", "gripper", "door_link"],
    }


for line in sys.stdin:
    req = json.loads(line)
    op, rid = req.get("op"), req.get("id")
    if op == "hello":
        if "hang_hello" in OPTIONS:
            time.sleep(3600)
        send({
            "id": rid, "ok": True, "protocol": int(OPTIONS.get("protocol", 1)),
            "bridge": "fake", "import_error": OPTIONS.get("import_error"),
        })
    elif op == "reset":
        size, steps = int(req.get("size", 32)), 0
        if req.get("task") not in ("door-open", "door-close"):
            send({"id": rid, "ok": False, "error": {"kind": "unknown_task", "message": "no such task"}})
            continue
        send(dict(state(), id=rid, ok=True), frames())
    elif op == "step":
        first = req["action"][0]
        if first == 0.5:
            time.sleep(3600)
        if first == 0.625:
            out.write(b'{"id": %d, "ok": true, "payl' % rid)
            os._exit(3)
        if first == 0.75:
            out.write(b"Traceback (most recent call last):\n")
            continue
        if first == 0.875:
            sys.exit(0)
        steps += 1
        send(dict(state(), id=rid, ok=True, truncated=False), frames())
    elif op == "camera":
        f, c = size * 1.2, size / 2
        pose = [[1.0, 0, 0, 0], [0, -1.0, 0, 0.6], [0, 0, -1.0, 1.0], [0, 0, 0, 1.0]]
        send({
            "id": rid, "ok": True, "width": size, "height": size,
            "intrinsics": [[f, 0, c], [0, f, c], [0, 0, 1]],
            "cam_to_world": pose, "world_to_cam": pose, "upright_flip": False,
        })
    elif op == "expert":
        send({"id": rid, "ok": True, "action": [0.25, 0.0, -0.5, 1.0]})
    elif op == "render":
        depth = b"\x00\x00\x80\x3f" * (size * size)  # 1.0 as little-endian f32
        send({"id": rid, "ok": True}, [("depth", "f4", [size, size], depth)])
    elif op == "close":
        send({"id": rid, "ok": True})
        break
    else:
        send({"id": rid, "ok": False, "error": {"kind": "bad_request", "message": op}})
