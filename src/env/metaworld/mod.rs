//! MetaWorld (MuJoCo), the paper's benchmark, as a [`World`]: the 11 tasks and 3 corner
//! cameras of the paper, run by a Python child process ([`bridge`]) in the venv that
//! `videoagent setup metaworld` makes ([`setup`]).
//!
//! Opening the world starts nothing (so `videoagent tasks` works without Python); the first
//! reset starts the bridge. A bridge that times out, crashes or garbles its stream is
//! dropped (killed and reaped) together with the episode, and the next reset starts a
//! fresh one. Coordinates are MetaWorld's: metres, z up, the table top at z = 0.
//!
//! Actions map one to one: MetaWorld's action is (dx, dy, dz, grip) in [-1, 1], the same
//! four numbers as [`Action`]; the bridge clips them as MetaWorld does.

pub mod bridge;
pub mod camera;
pub mod setup;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::env::{
    Action, GripperState, ObjectPose, Observation, Rgb8Image, StepOutcome, TaskInfo, ViewInfo,
    World, WorldError,
};
use bridge::{Bridge, BridgeConfig, BridgeError, Hello, Payload, Reply, Script};
pub use camera::CameraModel;

pub const WORLD_NAME: &str = "metaworld";
/// Frame sizes, pixels per side (the same range as the embedded world).
pub const SIZES: std::ops::RangeInclusive<u32> = 16..=256;

/// What every step renders: the planner's frame and the controller's segmentation.
const STEP_RENDER: [&str; 2] = ["rgb", "segmentation"];

struct Episode {
    task: &'static tasks::MetaTask,
    camera: CameraModel,
    last: Observation,
}

/// The MetaWorld world; see the module docs.
pub struct MetaWorld {
    size: u32,
    config: BridgeConfig,
    /// The venv the bridge runs in, when it is one made by `setup` (not a test's script).
    venv: Option<PathBuf>,
    bridge: Option<Bridge>,
    episode: Option<Episode>,
    /// Bridges started so far (a restart after a crash counts).
    starts: usize,
}

/// The bridge's state fields after a reset or step.
#[derive(Deserialize)]
struct State {
    hand: [f32; 3],
    grip: f32,
    object: [f32; 3],
    object_quat: [f32; 4],
    steps: u32,
    success: bool,
    labels: Vec<String>,
    #[serde(default)]
    truncated: bool,
}

impl MetaWorld {
    /// The world with the default venv ([`setup::venv_dir`]).
    pub fn new(size: u32) -> Result<Self, WorldError> {
        let venv = setup::venv_dir();
        let mut world = Self::with_config(size, default_config(&venv))?;
        world.venv = Some(venv);
        Ok(world)
    }

    pub fn with_config(size: u32, config: BridgeConfig) -> Result<Self, WorldError> {
        if !SIZES.contains(&size) {
            return Err(WorldError::BadSize { size });
        }
        Ok(Self {
            size,
            config,
            venv: None,
            bridge: None,
            episode: None,
            starts: 0,
        })
    }

    /// The current episode's camera at the world's frame size.
    pub fn camera(&self) -> Option<&CameraModel> {
        self.episode.as_ref().map(|e| &e.camera)
    }

    /// Depth along the optical axis in metres, row-major, for the current state.
    pub fn depth(&mut self) -> Result<Vec<f32>, WorldError> {
        self.episode.as_ref().ok_or(WorldError::NotReset)?;
        let reply = self.call("render", json!({ "render": ["depth"] }))?;
        Ok(decode_depth(
            payload(&reply, "render", "depth")?,
            "render",
            self.size,
        )?)
    }

    /// What the running bridge said in its handshake.
    pub fn hello(&self) -> Option<&Hello> {
        self.bridge.as_ref().map(Bridge::hello)
    }

    /// The running bridge's process id.
    pub fn bridge_pid(&self) -> Option<u32> {
        self.bridge.as_ref().map(Bridge::pid)
    }

    /// Bridges started so far.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// One request; a fatal bridge error drops the bridge and the episode with it.
    fn call(&mut self, op: &str, fields: serde_json::Value) -> Result<Reply, WorldError> {
        if self.bridge.is_none() {
            self.bridge = Some(Bridge::start(&self.config)?);
            self.starts += 1;
        }
        let bridge = self.bridge.as_mut().ok_or(WorldError::NotReset)?;
        bridge.request(op, fields).map_err(|e| {
            if e.is_fatal() {
                self.bridge = None;
                self.episode = None;
            }
            WorldError::from(e)
        })
    }

    fn observation(
        &self,
        reply: &Reply,
        op: &str,
        task: &str,
    ) -> Result<(Observation, State), WorldError> {
        let state: State = reply.parse(op)?;
        let rgb = decode_rgb(payload(reply, op, "rgb")?, op, self.size)?;
        let segmentation = decode_labels(payload(reply, op, "segmentation")?, op, self.size)?;
        let [qw, qx, qy, qz] = state.object_quat;
        let yaw = (2.0 * (qw * qz + qx * qy)).atan2(1.0 - 2.0 * (qy * qy + qz * qz));
        let object = tasks::find(task).map_or("object", |t| t.object);
        let observation = Observation {
            rgb,
            segmentation,
            labels: state.labels.clone(),
            gripper: GripperState {
                x: state.hand[0],
                y: state.hand[1],
                z: state.hand[2],
                closed: state.grip > 0.0,
                holding: None,
            },
            objects: vec![ObjectPose {
                name: object.to_owned(),
                x: state.object[0],
                y: state.object[1],
                angle: yaw,
                z: state.object[2],
            }],
        };
        Ok((observation, state))
    }
}

/// The bridge settings for the venv at `venv`: the embedded script, generous timeouts
/// (the first reset of a task builds its MuJoCo model and a GL context).
pub fn default_config(venv: &Path) -> BridgeConfig {
    BridgeConfig {
        python: setup::venv_python(venv),
        script: Script::Embedded,
        startup_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        env: Vec::new(),
        install_hint: setup::install_hint(venv),
    }
}

fn payload<'a>(reply: &'a Reply, op: &str, name: &str) -> Result<&'a Payload, BridgeError> {
    reply.payload(name).ok_or_else(|| BridgeError::Protocol {
        op: op.to_owned(),
        detail: format!("the reply has no '{name}' array"),
    })
}

fn check_shape(p: &Payload, op: &str, dtype: &str, shape: &[usize]) -> Result<(), BridgeError> {
    let itemsize = if dtype == "f4" { 4 } else { 1 };
    if p.dtype == dtype
        && p.shape == shape
        && p.bytes.len() == shape.iter().product::<usize>() * itemsize
    {
        Ok(())
    } else {
        Err(BridgeError::Protocol {
            op: op.to_owned(),
            detail: format!(
                "'{}' is {} {:?} ({} bytes), expected {dtype} {shape:?}",
                p.name,
                p.dtype,
                p.shape,
                p.bytes.len()
            ),
        })
    }
}

fn decode_rgb(p: &Payload, op: &str, size: u32) -> Result<Rgb8Image, BridgeError> {
    let s = size as usize;
    check_shape(p, op, "u1", &[s, s, 3])?;
    Ok(Rgb8Image {
        width: size,
        height: size,
        pixels: p.bytes.clone(),
    })
}

fn decode_labels(p: &Payload, op: &str, size: u32) -> Result<Vec<u8>, BridgeError> {
    let s = size as usize;
    check_shape(p, op, "u1", &[s, s])?;
    Ok(p.bytes.clone())
}

fn decode_depth(p: &Payload, op: &str, size: u32) -> Result<Vec<f32>, BridgeError> {
    let s = size as usize;
    check_shape(p, op, "f4", &[s, s])?;
    Ok(p.bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl World for MetaWorld {
    fn name(&self) -> &'static str {
        WORLD_NAME
    }

    fn tasks(&self) -> Vec<TaskInfo> {
        tasks::infos()
    }

    fn views(&self) -> Vec<ViewInfo> {
        tasks::views()
    }

    fn reset(&mut self, task: &str, view: usize, seed: u64) -> Result<Observation, WorldError> {
        let info = tasks::find(task).ok_or_else(|| WorldError::UnknownTask {
            task: task.to_owned(),
            valid: tasks::TASKS.map(|t| t.name).join(", "),
        })?;
        let (camera_name, _) = tasks::CAMERAS
            .get(view)
            .ok_or_else(|| WorldError::UnknownView {
                view: view.to_string(),
                valid: format!("0..{}", tasks::CAMERAS.len() - 1),
            })?;
        self.episode = None;
        let reply = self.call(
            "reset",
            json!({
                "task": task, "camera": camera_name, "seed": seed, "size": self.size,
                "render": STEP_RENDER,
            }),
        )?;
        let (observation, _) = self.observation(&reply, "reset", task)?;
        let camera: CameraModel = self.call("camera", json!({}))?.parse("camera")?;
        self.episode = Some(Episode {
            task: info,
            camera,
            last: observation.clone(),
        });
        Ok(observation)
    }

    fn step(&mut self, action: Action) -> Result<StepOutcome, WorldError> {
        let task = self.episode.as_ref().ok_or(WorldError::NotReset)?.task;
        let a = action.clamped();
        let reply = self.call(
            "step",
            json!({ "action": [a.dx, a.dy, a.dz, a.grip], "render": STEP_RENDER }),
        )?;
        let (observation, state) = self.observation(&reply, "step", task.name)?;
        let done = state.success || state.truncated || state.steps >= tasks::MAX_STEPS;
        if let Some(ep) = self.episode.as_mut() {
            ep.last = observation.clone();
        }
        Ok(StepOutcome {
            observation,
            success: state.success,
            done,
        })
    }

    fn expert_action(&mut self) -> Result<Action, WorldError> {
        self.episode.as_ref().ok_or(WorldError::NotReset)?;
        #[derive(Deserialize)]
        struct Expert {
            action: [f32; 4],
        }
        let expert: Expert = self.call("expert", json!({}))?.parse("expert")?;
        let [dx, dy, dz, grip] = expert.action;
        Ok(Action::new(dx, dy, dz, grip))
    }

    fn observe(&self) -> Result<Observation, WorldError> {
        Ok(self
            .episode
            .as_ref()
            .ok_or(WorldError::NotReset)?
            .last
            .clone())
    }

    fn pixel_to_table(&self, pixel: [f32; 2], size: u32, z: f32) -> Option<[f32; 2]> {
        let p = self.camera()?.on_plane(
            [f64::from(pixel[0]), f64::from(pixel[1])],
            size,
            f64::from(z),
        )?;
        Some([p[0] as f32, p[1] as f32])
    }

    fn table_to_pixel(&self, point: [f32; 2], size: u32, z: f32) -> Option<[f32; 2]> {
        let p = self.camera()?.project(
            [f64::from(point[0]), f64::from(point[1]), f64::from(z)],
            size,
        )?;
        Some([p[0] as f32, p[1] as f32])
    }

    fn setup_needed(&self) -> Option<String> {
        let venv = self.venv.as_ref().filter(|v| !setup::looks_installed(v))?;
        Some(format!(
            "no MetaWorld venv at {}: run `{}`",
            venv.display(),
            self.config.install_hint
        ))
    }
}
