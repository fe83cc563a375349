//! The agent side of VideoAgent: measuring plans against what really happens (and, as the
//! project grows, turning plans into actions, executing them and improving the model).

pub mod flow;
pub mod model_eval;
pub mod quality;
