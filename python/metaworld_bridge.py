"""MetaWorld bridge: a child process that runs MetaWorld (MuJoCo) for VideoAgent Studio.

The Rust side (src/env/metaworld/bridge.rs) spawns this script with the venv's Python and
speaks a JSON-lines protocol on stdin/stdout; docs/METAWORLD.md is the reference. In short:
one JSON request per line in; one JSON header line out per request, followed by the raw
bytes of the arrays the header lists under "payloads" (C order, little endian).

Nothing but protocol messages may reach the real stdout: fd 1 is redirected to stderr at
start-up (a stray print, a warning or a C library message must not corrupt a frame), and
every failure, including a missing package, is a JSON error response, never a traceback.
"""

import json
import os
import sys

PROTOCOL = 1
BRIDGE_VERSION = "0.1.0"

# The paper's tasks; the v3 names are the only ones on PyPI (MetaWorld 3.x).
PAPER_TASKS = [
    "door-open",
    "door-close",
    "basketball",
    "shelf-place",
    "button-press",
    "button-press-topdown",
    "faucet-close",
    "faucet-open",
    "handle-press",
    "hammer",
    "assembly",
]
RENDER_KINDS = ("rgb", "depth", "segmentation")
# Bodies that are scenery: they all become label 0, "background".
SCENERY = {"world", "tablelink", "RetainingWall", "mocap"}
# Task parts with their own label, taken out of their body's: the part the hand goes to,
# where that is not the whole body (AVDC's name2maskid): the door's handle, not its panel;
# the hammer's and the wrench's handles, not their heads. (The faucet's lever alone was
# tried: 1 faucet success of 6 instead of 4, so the faucet keeps its whole body.) Geom ids
# of MetaWorld 3.1.1's models (AVDC's ids for the v2 models), each checked against its body
# at start-up: part label -> (body, geom ids).
PARTS = {
    "door-open": {"door_handle": ("door_link", [43])},
    "hammer": {"hammer_handle": ("hammer", [36])},
    "assembly": {"wrench_handle": ("asmbly_peg", [37, 38])},
}
MAX_SIZE = 1024


def protocol_out():
    """Keeps the real stdout for protocol messages and points fd 1 at stderr."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class BridgeError(Exception):
    """A failure reported to the client as {"ok": false, "error": {kind, message}}."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def load_packages():
    """Imports the simulator; returns (modules, None) or (None, error message)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import numpy as np
        import mujoco
        import metaworld
        import metaworld.policies as policies
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
    except Exception as e:  # ImportError, or a GL back end that fails to load
        return None, f"{type(e).__name__}: {e}"
    return {
        "np": np,
        "mujoco": mujoco,
        "metaworld": metaworld,
        "policies": policies,
        "envs": envs,
    }, None


def package_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def policy_name(task):
    return "Sawyer" + "".join(w.capitalize() for w in task.split("-")) + "V3Policy"


class Episode:
    """One task's environment, renderer and expert; reused across resets of that task."""

    def __init__(self, mods, task):
        np, mujoco = mods["np"], mods["mujoco"]
        key = f"{task}-v3-goal-observable"
        if key not in mods["envs"]:
            raise BridgeError("unknown_task", f"MetaWorld has no task '{task}-v3'")
        self.np, self.mujoco = np, mujoco
        self.task = task
        self.env_cls = mods["envs"][key]
        self.env = self.env_cls(seed=0)
        # Shadows cost most of a small frame's render time and carry nothing a planner needs.
        self.env.model.vis.quality.shadowsize = 0
        self.policy = getattr(mods["policies"], policy_name(task))()
        self.renderer = None
        self.size = 0
        self.labels, self.geom_label = self.segmentation_labels()

    def segmentation_labels(self):
        """Label names and a geom id -> label index table (index 0 is the background)."""
        np, mujoco = self.np, self.mujoco
        model = self.env.model
        hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        labels = ["background", "robot", "gripper"]
        table = np.zeros(model.ngeom + 1, dtype=np.uint8)  # last entry: no geom (-1)
        for geom in range(model.ngeom):
            body = int(model.geom_bodyid[geom])
            root = int(model.body_rootid[body])
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
            root_name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, root)
            if root_name in SCENERY or body == 0:
                continue
            if root_name == "base":
                table[geom] = 2 if self.descends_from(body, hand) else 1
                continue
            label = name or root_name or f"body{body}"
            if label not in labels:
                labels.append(label)
            table[geom] = labels.index(label)
        for part, (body_name, geoms) in PARTS.get(self.task, {}).items():
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body_name)
            for geom in geoms:
                if geom >= model.ngeom or int(model.geom_bodyid[geom]) != body:
                    raise BridgeError(
                        "bad_model",
                        f"{self.task}: geom {geom} is not part of body '{body_name}' "
                        "(a MetaWorld version other than requirements.txt's?)",
                    )
                table[geom] = len(labels)
            labels.append(part)
        return labels, table

    def descends_from(self, body, ancestor):
        parent = self.env.model.body_parentid
        while body > 0:
            if body == ancestor:
                return True
            body = int(parent[body])
        return False

    def reset(self, seed, camera, size):
        np = self.np
        cam = self.mujoco.mj_name2id(self.env.model, self.mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam < 0:
            raise BridgeError("unknown_camera", f"MetaWorld has no camera '{camera}'")
        if not 16 <= size <= MAX_SIZE:
            raise BridgeError("bad_request", f"size {size} outside 16..{MAX_SIZE}")
        if not 0 <= seed < 2**32:
            raise BridgeError("bad_request", f"seed {seed} outside NumPy's 0..2^32-1")
        # The goal-observable constructor's seeding (what AVDC's protocol calls a seed):
        # the global NumPy RNG seeded with `seed` draws the layout in an unfrozen reset,
        # then the layout is frozen and the env reset again.
        saved = np.random.get_state()
        np.random.seed(seed)
        self.env._freeze_rand_vec = False
        self.env.reset()
        self.env._freeze_rand_vec = True
        self.env.seed(seed)
        np.random.set_state(saved)
        self.obs, _ = self.env.reset()
        self.camera = cam
        if self.renderer is None or self.size != size:
            self.close_renderer()
            self.renderer = self.mujoco.Renderer(self.env.model, size, size)
            self.size = size
        self.grip = -1.0
        self.success = False

    def upside_down(self):
        """MetaWorld's corner cameras have their image 'up' axis pointing at the floor."""
        return self.env.data.cam_xmat[self.camera].reshape(3, 3)[2, 1] < 0

    def upright(self, image):
        return image[::-1, ::-1] if self.upside_down() else image

    def render(self, kinds):
        np = self.np
        r = self.renderer
        out = []
        for kind in kinds:
            if kind not in RENDER_KINDS:
                raise BridgeError("bad_request", f"unknown render kind '{kind}'")
            r.update_scene(self.env.data, camera=self.camera)
            if kind == "rgb":
                image = r.render()
            elif kind == "depth":
                r.enable_depth_rendering()
                image = r.render().astype("<f4")
                r.disable_depth_rendering()
            else:
                r.enable_segmentation_rendering()
                geoms = r.render()[..., 0]
                r.disable_segmentation_rendering()
                image = self.geom_label[geoms]  # -1 (no geom) picks the last entry, 0
            out.append((kind, np.ascontiguousarray(self.upright(image))))
        return out

    def state(self):
        o = self.obs
        return {
            "hand": [float(v) for v in o[0:3]],
            "gripper_opening": float(o[3]),
            "grip": self.grip,
            "object": [float(v) for v in o[4:7]],
            "object_quat": [float(v) for v in o[7:11]],
            "object2": [float(v) for v in o[11:14]],
            "object2_quat": [float(v) for v in o[14:18]],
            "goal": [float(v) for v in o[36:39]],
            "steps": int(self.env.curr_path_length),
            "max_steps": int(self.env.max_path_length),
            "success": self.success,
            "labels": self.labels,
        }

    def step(self, action):
        np = self.np
        if len(action) != 4 or not all(isinstance(v, (int, float)) for v in action):
            raise BridgeError("bad_request", "action must be 4 numbers")
        if self.env.curr_path_length >= self.env.max_path_length:
            raise BridgeError("episode_over", "the step limit was reached; reset first")
        a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.obs, reward, _, truncated, info = self.env.step(a)
        self.grip = float(a[3])
        self.success = bool(info["success"])
        return float(reward), bool(truncated)

    def expert(self):
        return [float(v) for v in np_clip(self.np, self.policy.get_action(self.obs))]

    def camera_matrix(self):
        """Intrinsics and extrinsics of the camera as the delivered image shows it (after
        the upright flip), OpenCV convention: x right, y down, z forward; pixel centres
        at i + 0.5."""
        np = self.np
        model, data = self.env.model, self.env.data
        f = 0.5 * self.size / np.tan(np.deg2rad(model.cam_fovy[self.camera]) / 2)
        c = self.size / 2
        axes = data.cam_xmat[self.camera].reshape(3, 3)  # columns: camera x, y, z in world
        flip = np.diag([-1.0, 1.0, -1.0]) if self.upside_down() else np.diag([1.0, -1.0, -1.0])
        rotation = axes @ flip  # camera (OpenCV) -> world
        cam_to_world = np.eye(4)
        cam_to_world[:3, :3] = rotation
        cam_to_world[:3, 3] = data.cam_xpos[self.camera]
        return {
            "width": self.size,
            "height": self.size,
            "intrinsics": [[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]],
            "cam_to_world": cam_to_world.tolist(),
            "world_to_cam": np.linalg.inv(cam_to_world).tolist(),
            "upright_flip": bool(self.upside_down()),
        }

    def close_renderer(self):
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None

    def close(self):
        self.close_renderer()
        self.env.close()


def np_clip(np, a):
    return np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)


class Bridge:
    def __init__(self, out):
        self.out = out
        self.mods, self.import_error = load_packages()
        self.episodes = {}
        self.current = None

    def send(self, header, arrays=()):
        payloads = []
        blobs = []
        for name, array in arrays:
            blob = array.tobytes()
            payloads.append(
                {
                    "name": name,
                    "dtype": array.dtype.str.lstrip("<|="),
                    "shape": list(array.shape),
                    "bytes": len(blob),
                }
            )
            blobs.append(blob)
        header["payloads"] = payloads
        self.out.write(json.dumps(header).encode() + b"\n" + b"".join(blobs))

    def episode(self):
        if self.current is None:
            raise BridgeError("not_reset", "no episode: reset first")
        return self.current

    def require_packages(self):
        if self.mods is None:
            raise BridgeError("missing_packages", self.import_error)

    def handle(self, req):
        op = req.get("op")
        if op == "hello":
            return {
                "protocol": PROTOCOL,
                "bridge": BRIDGE_VERSION,
                "python": sys.version.split()[0],
                "metaworld": package_version("metaworld"),
                "mujoco": package_version("mujoco"),
                "gl": os.environ.get("MUJOCO_GL"),
                "tasks": PAPER_TASKS,
                "import_error": self.import_error,
            }, ()
        if op == "close":
            return {}, ()
        if op not in ("reset", "step", "render", "state", "expert", "success", "camera"):
            raise BridgeError("bad_request", f"unknown op '{op}'")
        self.require_packages()
        render = req.get("render", [])
        if op == "reset":
            task = req.get("task")
            if task not in self.episodes:
                self.episodes[task] = Episode(self.mods, task)
            ep = self.episodes[task]
            ep.reset(int(req.get("seed", 0)), req.get("camera", "corner"), int(req.get("size", 64)))
            self.current = ep
            return ep.state(), ep.render(render)
        ep = self.episode()
        if op == "step":
            reward, truncated = ep.step(req.get("action", []))
            header = ep.state()
            header.update(reward=reward, truncated=truncated)
            return header, ep.render(render)
        if op == "render":
            return {}, ep.render(render)
        if op == "state":
            return ep.state(), ()
        if op == "expert":
            return {"action": ep.expert()}, ()
        if op == "success":
            return {"success": ep.success}, ()
        return ep.camera_matrix(), ()

    def serve(self, lines):
        for line in lines:
            line = line.strip()
            if not line:
                continue
            req_id = None
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise BridgeError("bad_request", "a request is a JSON object")
                req_id = req.get("id")
                header, arrays = self.handle(req)
                header.update(id=req_id, ok=True)
                self.send(header, arrays)
                if req.get("op") == "close":
                    break
            except BridgeError as e:
                self.send({"id": req_id, "ok": False, "error": {"kind": e.kind, "message": e.message}})
            except json.JSONDecodeError as e:
                self.send({"id": None, "ok": False, "error": {"kind": "bad_json", "message": str(e)}})
            except Exception as e:  # a simulator failure must not kill the bridge
                import traceback

                traceback.print_exc(file=sys.stderr)
                self.send({"id": req_id, "ok": False, "error": {"kind": "internal", "message": f"{type(e).__name__}: {e}"}})
        for ep in self.episodes.values():
            ep.close()


def main():
    out = protocol_out()
    bridge = Bridge(out)
    bridge.serve(sys.stdin)


if __name__ == "__main__":
    main()
