use serde::{Deserialize, Serialize};

/// How hard a task is for a video planner: easy tasks need one straight motion, medium ones
/// a precise contact, hard ones a grasp and several stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

impl std::fmt::Display for Difficulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Easy => "easy",
            Self::Medium => "medium",
            Self::Hard => "hard",
        })
    }
}

/// What a world says about one of its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub difficulty: Difficulty,
    /// The canonical instruction, then its paraphrases.
    pub instructions: Vec<String>,
    /// The episode ends unsuccessfully after this many steps.
    pub max_steps: u32,
}

impl TaskInfo {
    pub fn instruction(&self) -> &str {
        self.instructions.first().map_or("", String::as_str)
    }
}

/// A camera of a world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewInfo {
    pub name: String,
    pub description: String,
}
