//! The embedded tabletop world: a table seen from above with a gripper and articulated or
//! free objects, simulated by rapier2d and drawn by tiny-skia. It mirrors the paper's
//! MetaWorld tasks (button, door, drawer, push, pick-place, hammer) at a size a CPU can learn.
//!
//! Same (task, view, seed) gives byte-identical frames and states on every run: the physics
//! is built with rapier's `enhanced-determinism` and the layout comes from a seeded ChaCha RNG.

mod expert;
pub mod render;
pub mod scene;
pub mod shapes;
pub mod tasks;
pub mod true_flow;

use crate::env::{
    GripperState, ObjectPose, Observation, StepOutcome, TaskInfo, ViewInfo, World, WorldError,
};
use render::CAMERAS;
use scene::Scene;
use shapes::palette;
pub use tasks::TaskKind;
pub use true_flow::ground_truth_flow;

pub const WORLD_NAME: &str = "tabletop";
/// Frame sizes the renderer accepts, pixels per side.
pub const SIZES: std::ops::RangeInclusive<u32> = 16..=256;
pub const DEFAULT_SIZE: u32 = 64;

struct Episode {
    task: TaskKind,
    camera: usize,
    scene: Scene,
    steps: u32,
}

/// The tabletop world; see the module docs.
pub struct Tabletop {
    size: u32,
    episode: Option<Episode>,
}

impl Tabletop {
    pub fn new(size: u32) -> Result<Self, WorldError> {
        if !SIZES.contains(&size) {
            return Err(WorldError::BadSize { size });
        }
        Ok(Self {
            size,
            episode: None,
        })
    }

    fn episode(&self) -> Result<&Episode, WorldError> {
        self.episode.as_ref().ok_or(WorldError::NotReset)
    }

    fn observation(&self, ep: &Episode) -> Result<Observation, WorldError> {
        let camera = &CAMERAS[ep.camera];
        let scene = &ep.scene;
        let gripper = GripperState {
            x: scene.gripper_position().x,
            y: scene.gripper_position().y,
            z: scene.gripper.z,
            closed: scene.gripper.closed,
            holding: scene.held().map(|i| scene.things[i].name.to_owned()),
        };
        let objects = (0..scene.things.len())
            .map(|i| {
                let p = scene.pose(i);
                ObjectPose {
                    name: scene.things[i].name.to_owned(),
                    x: p.translation.x,
                    y: p.translation.y,
                    angle: p.rotation.angle(),
                    z: scene.things[i].z,
                }
            })
            .collect();
        Ok(Observation {
            rgb: render::render(scene, camera, self.size)?,
            segmentation: render::segment(scene, camera, self.size),
            labels: render::labels(scene),
            gripper,
            objects,
        })
    }
}

fn task_kind(name: &str) -> Result<TaskKind, WorldError> {
    TaskKind::from_name(name).ok_or_else(|| WorldError::UnknownTask {
        task: name.to_owned(),
        valid: TaskKind::ALL.map(TaskKind::name).join(", "),
    })
}

/// Shows a pressed button in its pressed colour.
fn show_button_state(scene: &mut Scene) {
    let Some(button) = scene.find("button") else {
        return;
    };
    let pressed = tasks::Measure(scene).button_pressed();
    if let Some(top) = scene.things[button].parts.get_mut(1) {
        top.color = if pressed {
            palette::BUTTON_PRESSED
        } else {
            palette::BUTTON
        };
    }
}

impl World for Tabletop {
    fn name(&self) -> &'static str {
        WORLD_NAME
    }

    fn tasks(&self) -> Vec<TaskInfo> {
        TaskKind::ALL.iter().map(|t| t.info()).collect()
    }

    fn views(&self) -> Vec<ViewInfo> {
        render::view_infos()
    }

    fn reset(&mut self, task: &str, view: usize, seed: u64) -> Result<Observation, WorldError> {
        let task = task_kind(task)?;
        if view >= CAMERAS.len() {
            return Err(WorldError::UnknownView {
                view: view.to_string(),
                valid: format!("0..{}", CAMERAS.len() - 1),
            });
        }
        let episode = Episode {
            task,
            camera: view,
            scene: task.build(seed),
            steps: 0,
        };
        let obs = self.observation(&episode)?;
        self.episode = Some(episode);
        Ok(obs)
    }

    fn step(&mut self, action: crate::env::Action) -> Result<StepOutcome, WorldError> {
        let ep = self.episode.as_mut().ok_or(WorldError::NotReset)?;
        ep.scene.step(action);
        ep.steps += 1;
        show_button_state(&mut ep.scene);
        let success = tasks::Measure(&ep.scene).success(ep.task);
        let done = success || ep.steps >= ep.task.max_steps();
        let ep = self.episode()?;
        Ok(StepOutcome {
            observation: self.observation(ep)?,
            success,
            done,
        })
    }

    fn expert_action(&mut self) -> Result<crate::env::Action, WorldError> {
        let ep = self.episode()?;
        Ok(expert::act(ep.task, &ep.scene))
    }

    fn observe(&self) -> Result<Observation, WorldError> {
        self.observation(self.episode()?)
    }

    fn pixel_to_table(&self, pixel: [f32; 2], size: u32, z: f32) -> Option<[f32; 2]> {
        let camera = &CAMERAS[self.episode.as_ref()?.camera];
        let p = render::unproject(
            camera,
            size,
            rapier2d::math::Vector::new(pixel[0], pixel[1]),
            z,
        );
        Some([p.x, p.y])
    }

    fn table_to_pixel(&self, point: [f32; 2], size: u32, z: f32) -> Option<[f32; 2]> {
        let camera = &CAMERAS[self.episode.as_ref()?.camera];
        let p = render::project(
            camera,
            size,
            rapier2d::math::Vector::new(point[0], point[1]),
            z,
        );
        Some([p.x, p.y])
    }
}

/// Physics-only throughput of `task` (expert actions, no rendering), steps per second.
pub fn physics_steps_per_sec(task: &str, seconds: f64) -> f64 {
    let Some(kind) = TaskKind::from_name(task) else {
        return 0.0;
    };
    let start = std::time::Instant::now();
    let mut steps = 0u64;
    let mut seed = 0;
    while start.elapsed().as_secs_f64() < seconds {
        let mut scene = kind.build(seed);
        for _ in 0..kind.max_steps() {
            scene.step(expert::act(kind, &scene));
            steps += 1;
            if tasks::Measure(&scene).success(kind) {
                break;
            }
        }
        seed += 1;
    }
    steps as f64 / start.elapsed().as_secs_f64()
}
