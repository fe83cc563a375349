//! The compare view: two iterations (or an iteration and the rollout) at the current frame,
//! side by side, with a wipe slider, as onion skin, or as a difference heatmap.

use egui::{Color32, Rect, Sense, Vec2, pos2};

use super::command::{Command, Studio};
use super::state::{CompareMode, CompareSource, CompareState, PlanView};
use super::textures::{TextureCache, TextureKey};
use crate::env::Rgb8Image;

const VIEW_SIZE: f32 = 256.0;

/// The frame of `source` shown at plan frame `frame_idx` (a rollout is stretched onto the plan's
/// frames, so its start and end line up with the plan's).
pub fn source_frame(
    plan: &PlanView,
    source: CompareSource,
    frame_idx: usize,
) -> Option<&Rgb8Image> {
    let frames = match source {
        CompareSource::Iteration(k) => &plan.iterations.get(k)?.frames,
        CompareSource::Rollout => &plan.rollout.as_ref()?.frames,
    };
    frames.get(source_index(plan, source, frame_idx))
}

/// Index into `source`'s frames shown at plan frame `frame_idx`.
fn source_index(plan: &PlanView, source: CompareSource, frame_idx: usize) -> usize {
    match (source, &plan.rollout) {
        (CompareSource::Rollout, Some(rollout)) => {
            let last_plan = plan.frame_count().saturating_sub(1).max(1);
            (frame_idx * rollout.frames.len().saturating_sub(1)) / last_plan
        }
        _ => frame_idx,
    }
}

fn row_of(source: CompareSource) -> usize {
    match source {
        CompareSource::Iteration(k) => k,
        CompareSource::Rollout => super::panels::ROLLOUT_ROW,
    }
}

fn source_label(source: CompareSource) -> String {
    match source {
        CompareSource::Iteration(k) => format!("Iteration {k}"),
        CompareSource::Rollout => "Rollout".into(),
    }
}

pub fn compare_ui(
    ui: &mut egui::Ui,
    studio: &Studio,
    plan: &PlanView,
    textures: &mut TextureCache,
    heatmap: &dyn Fn(&Rgb8Image, &Rgb8Image) -> Rgb8Image,
    commands: &mut Vec<Command>,
) {
    let mut state: CompareState = studio.compare;
    let mut sources: Vec<CompareSource> = (0..plan.iterations.len())
        .map(CompareSource::Iteration)
        .collect();
    if plan.rollout.is_some() {
        sources.push(CompareSource::Rollout);
    }
    ui.horizontal(|ui| {
        ui.strong("Compare");
        for mode in CompareMode::ALL {
            ui.selectable_value(&mut state.mode, mode, mode.label());
        }
    });
    ui.horizontal(|ui| {
        for (name, side) in [("A", &mut state.a), ("B", &mut state.b)] {
            egui::ComboBox::from_id_salt(format!("compare_{name}"))
                .selected_text(format!("{name}: {}", source_label(*side)))
                .show_ui(ui, |ui| {
                    for s in &sources {
                        ui.selectable_value(side, *s, source_label(*s));
                    }
                })
                .response
                .widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::ComboBox, true, format!("Compare {name}"))
                });
        }
        if matches!(state.mode, CompareMode::Wipe | CompareMode::OnionSkin) {
            let name = ui.label("Mix of B");
            ui.add(egui::Slider::new(&mut state.mix, 0.0..=1.0))
                .labelled_by(name.id);
        }
    });
    if state != studio.compare {
        commands.push(Command::SetCompare(state));
    }
    let frame_idx = studio.playback.frame_idx;
    let (Some(a), Some(b)) = (
        source_frame(plan, state.a, frame_idx),
        source_frame(plan, state.b, frame_idx),
    ) else {
        ui.weak("Pick two iterations with frames to compare.");
        return;
    };
    let ctx = ui.ctx().clone();
    let mut frame_texture = |source: CompareSource, image: &Rgb8Image| {
        let source_idx = source_index(plan, source, frame_idx);
        let key = TextureKey::Frame {
            plan: plan.id.0,
            row: row_of(source),
            frame_idx: source_idx,
        };
        textures.get_or_upload(&ctx, key, || image.clone())
    };
    let full = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
    match state.mode {
        CompareMode::SideBySide => {
            let (ta, tb) = (frame_texture(state.a, a), frame_texture(state.b, b));
            ui.horizontal(|ui| {
                for t in [ta, tb] {
                    let (rect, _) = ui.allocate_exact_size(Vec2::splat(VIEW_SIZE), Sense::hover());
                    ui.painter().image(t.id(), rect, full, Color32::WHITE);
                }
            });
        }
        CompareMode::Wipe => {
            let (ta, tb) = (frame_texture(state.a, a), frame_texture(state.b, b));
            let (rect, response) =
                ui.allocate_exact_size(Vec2::splat(VIEW_SIZE), Sense::click_and_drag());
            let split = rect.left() + rect.width() * (1.0 - state.mix);
            ui.painter().image(ta.id(), rect, full, Color32::WHITE);
            let right = Rect::from_min_max(pos2(split, rect.top()), rect.max);
            let uv = Rect::from_min_max(pos2(1.0 - state.mix, 0.0), pos2(1.0, 1.0));
            ui.painter().image(tb.id(), right, uv, Color32::WHITE);
            ui.painter().vline(
                split,
                rect.y_range(),
                egui::Stroke::new(2.0, Color32::WHITE),
            );
            if let Some(pos) = response.interact_pointer_pos() {
                let mix = 1.0 - ((pos.x - rect.left()) / rect.width()).clamp(0.0, 1.0);
                commands.push(Command::SetCompare(CompareState { mix, ..state }));
            }
        }
        CompareMode::OnionSkin => {
            let (ta, tb) = (frame_texture(state.a, a), frame_texture(state.b, b));
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(VIEW_SIZE), Sense::hover());
            ui.painter().image(ta.id(), rect, full, Color32::WHITE);
            let alpha = (state.mix * 255.0) as u8;
            ui.painter()
                .image(tb.id(), rect, full, Color32::from_white_alpha(alpha));
        }
        CompareMode::Difference => {
            let (ka, kb) = (row_of(state.a), row_of(state.b));
            let key = TextureKey::Difference {
                plan: plan.id.0,
                a: ka,
                b: kb,
                frame_idx,
            };
            let texture = textures.get_or_upload(&ctx, key, || {
                let size = a.width.min(b.width);
                heatmap(
                    &crate::model::pipeline::resize(a, size),
                    &crate::model::pipeline::resize(b, size),
                )
            });
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(VIEW_SIZE), Sense::hover());
            ui.painter().image(texture.id(), rect, full, Color32::WHITE);
            ui.weak("black: identical; red, yellow, white: larger differences");
        }
    }
}
