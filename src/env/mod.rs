//! Simulated worlds: the [`World`] trait every environment implements, the embedded
//! [`tabletop`] world (pure Rust, CPU, deterministic), and [`metaworld`] (the paper's
//! benchmark, run by a Python child process).
//!
//! A world is reset to a (task, view, seed) start, stepped with [`Action`]s, and judged by
//! its own success check. It also knows a scripted expert for every task, whose
//! demonstrations become the video model's training data. Nothing here knows about models.

mod action;
pub mod demo;
mod error;
pub mod metaworld;
mod observation;
pub mod tabletop;
mod task;

pub use action::Action;
pub use error::WorldError;
pub use observation::{GripperState, ObjectPose, Observation, Rgb8Image};
pub use task::{Difficulty, TaskInfo, ViewInfo};

/// Result of one [`World::step`].
#[derive(Clone, Debug)]
pub struct StepOutcome {
    pub observation: Observation,
    /// The task's success check holds in the new state.
    pub success: bool,
    /// The episode is over: success, or the task's step limit was reached.
    pub done: bool,
}

/// An environment that can be reset, rendered, stepped and judged. `Any`, so that a path
/// that needs one world's extras (MetaWorld's depth and camera) can ask for it.
pub trait World: Send + std::any::Any {
    /// Short identifier, e.g. `tabletop`.
    fn name(&self) -> &'static str;
    /// Every task this world offers, in a stable order.
    fn tasks(&self) -> Vec<TaskInfo>;
    /// The camera views; index `i` of this list is view `i`.
    fn views(&self) -> Vec<ViewInfo>;
    /// Starts a new episode. The same (task, view, seed) always gives the same start.
    fn reset(&mut self, task: &str, view: usize, seed: u64) -> Result<Observation, WorldError>;
    /// Advances one control step.
    fn step(&mut self, action: Action) -> Result<StepOutcome, WorldError>;
    /// What the scripted expert would do in the current state.
    fn expert_action(&mut self) -> Result<Action, WorldError>;
    /// The observation of the current state, rendered again.
    fn observe(&self) -> Result<Observation, WorldError>;
    /// The table point at height `z` that the current episode's camera shows at `pixel` of a
    /// `size` x `size` frame (continuous coordinates, pixel centres at `i + 0.5`); `None`
    /// before a reset or for worlds without a planar camera model.
    fn pixel_to_table(&self, _pixel: [f32; 2], _size: u32, _z: f32) -> Option<[f32; 2]> {
        None
    }
    /// The inverse of [`World::pixel_to_table`].
    fn table_to_pixel(&self, _point: [f32; 2], _size: u32, _z: f32) -> Option<[f32; 2]> {
        None
    }
    /// What must be installed before this world can run (a sentence with the command),
    /// or `None` when it is ready as far as can be told without starting it.
    fn setup_needed(&self) -> Option<String> {
        None
    }
}

/// Names of the worlds this build knows.
pub const WORLD_NAMES: &[&str] = &[tabletop::WORLD_NAME, metaworld::WORLD_NAME];

/// Opens a world by name with frames of `size` x `size` pixels. Nothing is started yet:
/// a world that runs a process starts it at the first reset.
pub fn open_world(name: &str, size: u32) -> Result<Box<dyn World>, WorldError> {
    match name {
        tabletop::WORLD_NAME => Ok(Box::new(tabletop::Tabletop::new(size)?)),
        metaworld::WORLD_NAME => Ok(Box::new(metaworld::MetaWorld::new(size)?)),
        other => Err(WorldError::UnknownWorld {
            name: other.to_owned(),
            valid: WORLD_NAMES.join(", "),
        }),
    }
}

/// Resolves a view given by index (`"1"`) or by name (`"corner2"`).
pub fn resolve_view(views: &[ViewInfo], view: &str) -> Result<usize, WorldError> {
    let by_index = view.parse::<usize>().ok().filter(|i| *i < views.len());
    by_index
        .or_else(|| views.iter().position(|v| v.name == view))
        .ok_or_else(|| WorldError::UnknownView {
            view: view.to_owned(),
            valid: views
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{i}|{}", v.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}
