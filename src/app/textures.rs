//! GPU textures of plan frames, uploaded once per frame image and reused on every repaint.

use std::collections::HashMap;

use egui::{ColorImage, TextureHandle, TextureOptions};

use crate::env::Rgb8Image;

/// What a texture shows: a frame of an iteration or of the rollout of a plan, or a derived image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextureKey {
    Frame {
        plan: u64,
        /// `usize::MAX` for the rollout.
        row: usize,
        frame_idx: usize,
    },
    Difference {
        plan: u64,
        a: usize,
        b: usize,
        frame_idx: usize,
    },
    /// A frame of the old-vs-new model comparison: `row` 0 is the expert, 1 before, 2 after.
    ModelComparison {
        start: usize,
        row: usize,
        frame_idx: usize,
    },
}

/// Textures by key; a plan replaced under the same id must be [`TextureCache::forget_plan`]ed.
#[derive(Default)]
pub struct TextureCache {
    textures: HashMap<TextureKey, TextureHandle>,
}

impl TextureCache {
    pub fn get_or_upload(
        &mut self,
        ctx: &egui::Context,
        key: TextureKey,
        image: impl FnOnce() -> Rgb8Image,
    ) -> TextureHandle {
        self.textures
            .entry(key)
            .or_insert_with(|| {
                let image = image();
                let color = ColorImage::from_rgb(
                    [image.width as usize, image.height as usize],
                    &image.pixels,
                );
                ctx.load_texture(format!("{key:?}"), color, TextureOptions::NEAREST)
            })
            .clone()
    }

    pub fn forget_plan(&mut self, id: u64) {
        self.textures.retain(|key, _| match key {
            TextureKey::Frame { plan, .. } | TextureKey::Difference { plan, .. } => *plan != id,
            TextureKey::ModelComparison { .. } => true,
        });
    }

    /// Drops the frames of the last model comparison (a new one replaces it).
    pub fn forget_model_comparison(&mut self) {
        self.textures
            .retain(|key, _| !matches!(key, TextureKey::ModelComparison { .. }));
    }

    pub fn len(&self) -> usize {
        self.textures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.textures.is_empty()
    }
}
