//! The agent side of VideoAgent: measuring plans against what really happens, and turning
//! plans into actions: [`flow`] (dense optical flow) -> [`motion`] (object motion and
//! subgoals, with [`rigid`] fits) -> [`controller`] -> [`execute`] (episodes with replanning);
//! in MetaWorld, in 3D: [`motion3d`] (depth-lifted points, 6-DoF fits) -> [`execute3d`];
//! [`execution`] picks the path for the world at hand;
//! [`eval`] runs the paper's protocol over tasks, views and seeds, and [`improve`] the
//! self-improvement rounds (execute refined plans, keep verified successes, fine-tune).

pub mod controller;
pub mod critic_agreement;
pub mod eval;
pub mod execute;
pub mod execute3d;
pub mod execution;
pub mod execution_critic;
pub mod flow;
pub mod improve;
pub mod model_eval;
pub mod motion;
pub mod motion3d;
pub mod quality;
pub mod refine;
pub mod refine_data;
pub mod rigid;
pub mod settle;
