//! The paper's 11 MetaWorld tasks and 3 cameras: names, instructions, and which body of
//! the scene is the task's object (a segmentation label of the bridge).

use crate::env::{Difficulty, Observation, TaskInfo, ViewInfo};

/// Success within this many steps (the paper's protocol; MetaWorld's own path length).
pub const MAX_STEPS: u32 = 500;

/// One task as this world offers it.
pub struct MetaTask {
    /// The name without MetaWorld's `-v3` suffix, as the paper writes it.
    pub name: &'static str,
    pub difficulty: Difficulty,
    pub instructions: &'static [&'static str],
    /// The body whose motion the plan shows (a segmentation label).
    pub object: &'static str,
    /// The part of it the hand goes to, where that is not the whole body (a label of its
    /// own: the bridge takes these geoms out of the body's label, as AVDC's name2maskid):
    /// the door's handle, not its panel.
    pub part: Option<&'static str>,
}

/// In the paper's order. Hard: the three the paper names as hard (several stages, a grasp).
pub const TASKS: [MetaTask; 11] = [
    task(
        "door-open",
        Difficulty::Medium,
        &["open the door", "door open"],
        "door_link",
    )
    .with_part("door_handle"),
    task(
        "door-close",
        Difficulty::Easy,
        &["close the door", "door close"],
        "door_link",
    ),
    task(
        "basketball",
        Difficulty::Medium,
        &["put the ball into the hoop", "basketball"],
        "basketball",
    ),
    task(
        "shelf-place",
        Difficulty::Hard,
        &["place the block on the shelf", "shelf place"],
        "obj",
    ),
    task(
        "button-press",
        Difficulty::Easy,
        &["press the button", "button press"],
        "button",
    ),
    task(
        "button-press-topdown",
        Difficulty::Easy,
        &["press the button from the top", "button press topdown"],
        "button",
    ),
    task(
        "faucet-close",
        Difficulty::Easy,
        &["turn the faucet off", "faucet close"],
        "faucet_link2",
    ),
    task(
        "faucet-open",
        Difficulty::Easy,
        &["turn the faucet on", "faucet open"],
        "faucet_link2",
    ),
    task(
        "handle-press",
        Difficulty::Easy,
        &["press the handle down", "handle press"],
        "handle_link",
    ),
    task(
        "hammer",
        Difficulty::Hard,
        &["hammer the nail in", "hammer"],
        "hammer",
    )
    .with_part("hammer_handle"),
    task(
        "assembly",
        Difficulty::Hard,
        &["put the ring on the peg", "assembly"],
        "asmbly_peg",
    )
    .with_part("wrench_handle"),
];

const fn task(
    name: &'static str,
    difficulty: Difficulty,
    instructions: &'static [&'static str],
    object: &'static str,
) -> MetaTask {
    MetaTask {
        name,
        difficulty,
        instructions,
        object,
        part: None,
    }
}

impl MetaTask {
    const fn with_part(mut self, part: &'static str) -> Self {
        self.part = Some(part);
        self
    }

    /// Pixels of the whole object, its part included, in row order.
    pub fn object_pixels(&self, observation: &Observation) -> Vec<(u32, u32)> {
        let mut pixels = observation.mask_pixels(self.object);
        if let Some(part) = self.part {
            pixels.extend(observation.mask_pixels(part));
            pixels.sort_unstable_by_key(|&(x, y)| (y, x));
        }
        pixels
    }
}

/// The paper's cameras, MetaWorld's names.
pub const CAMERAS: [(&str, &str); 3] = [
    ("corner", "front-left corner, looking across the table"),
    ("corner2", "right corner, looking down the table"),
    ("corner3", "right, high, looking down at the table"),
];

pub fn find(name: &str) -> Option<&'static MetaTask> {
    TASKS.iter().find(|t| t.name == name)
}

pub fn infos() -> Vec<TaskInfo> {
    TASKS
        .iter()
        .map(|t| TaskInfo {
            name: t.name.to_owned(),
            difficulty: t.difficulty,
            instructions: t.instructions.iter().map(|s| (*s).to_owned()).collect(),
            max_steps: MAX_STEPS,
        })
        .collect()
}

pub fn views() -> Vec<ViewInfo> {
    CAMERAS
        .iter()
        .map(|(name, description)| ViewInfo {
            name: (*name).to_owned(),
            description: (*description).to_owned(),
        })
        .collect()
}
