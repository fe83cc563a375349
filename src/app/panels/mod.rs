//! The studio's panels, one file each. They read state and push commands.

mod browser;
mod inspector;
mod model_comparison;
mod status;
mod time_panel;
mod viewport;

pub use browser::browser;
pub use inspector::inspector;
pub use model_comparison::model_comparison;
pub use status::{status_bar, toasts};
pub use time_panel::time_panel;
pub use viewport::{ROLLOUT_ROW, viewport};
