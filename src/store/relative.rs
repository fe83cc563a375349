//! Relative names read from files (a manifest's episode folder, a plan's frame files) that are
//! joined onto the folder holding the file: they must stay inside it, or a shared dataset or
//! plan folder could make us read, and copy into a store, any file of the machine.

use std::path::{Component, Path};

/// Whether `name` is a non-empty relative path of plain components (no root, no `..`).
pub fn is_inside(name: &str) -> bool {
    let mut components = Path::new(name).components().peekable();
    components.peek().is_some()
        && components.all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_stay_inside() {
        for ok in ["frames/00.png", "iterations/01", "./a", "episodes/push/0/3"] {
            assert!(is_inside(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "frames/../../x"] {
            assert!(!is_inside(bad), "{bad}");
        }
    }
}
