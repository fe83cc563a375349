//! Expert demonstrations: run a world's scripted expert from a start and record everything.

use serde::{Deserialize, Serialize};

use super::{Action, GripperState, ObjectPose, Observation, Rgb8Image, World, WorldError};

/// The true state at one frame of an episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    pub gripper: GripperState,
    pub objects: Vec<ObjectPose>,
}

/// One recorded expert episode: frame `i` is the observation before action `i`; the last
/// frame follows the last action.
#[derive(Clone, Debug)]
pub struct Demonstration {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub frames: Vec<Rgb8Image>,
    pub segmentations: Vec<Vec<u8>>,
    pub labels: Vec<String>,
    pub states: Vec<StateRecord>,
    pub actions: Vec<Action>,
    pub success: bool,
}

impl Demonstration {
    fn push(&mut self, obs: Observation) {
        self.states.push(StateRecord {
            gripper: obs.gripper,
            objects: obs.objects,
        });
        self.frames.push(obs.rgb);
        self.segmentations.push(obs.segmentation);
    }
}

/// Runs the expert of `task` from (`view`, `seed`) until success or the step limit.
pub fn record_expert(
    world: &mut dyn World,
    task: &str,
    view: usize,
    seed: u64,
) -> Result<Demonstration, WorldError> {
    let first = world.reset(task, view, seed)?;
    let mut demo = Demonstration {
        task: task.to_owned(),
        view,
        seed,
        labels: first.labels.clone(),
        frames: Vec::new(),
        segmentations: Vec::new(),
        states: Vec::new(),
        actions: Vec::new(),
        success: false,
    };
    demo.push(first);
    loop {
        let action = world.expert_action()?;
        let out = world.step(action)?;
        demo.actions.push(action);
        demo.push(out.observation);
        if out.done {
            demo.success = out.success;
            return Ok(demo);
        }
    }
}
