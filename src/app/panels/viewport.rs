//! Central viewport: one row per refinement iteration (all frames, the current one outlined)
//! with that iteration's critique and clickable findings, the rollout row, then the compare view.

use egui::{Color32, Rect, Sense, Stroke, Vec2};

use crate::app::command::{Command, JobCommand, Studio};
use crate::app::compare;
use crate::app::state::{IterationView, PlanView};
use crate::app::textures::{TextureCache, TextureKey};
use crate::env::Rgb8Image;
use crate::store::export::VideoFormat;

/// Row index the texture cache uses for the rollout.
pub const ROLLOUT_ROW: usize = usize::MAX;

pub fn viewport(
    ui: &mut egui::Ui,
    studio: &Studio,
    textures: &mut TextureCache,
    heatmap: &dyn Fn(&Rgb8Image, &Rgb8Image) -> Rgb8Image,
    commands: &mut Vec<Command>,
) {
    let Some(plan) = studio.selected_plan() else {
        ui.centered_and_justified(|ui| {
            ui.weak("Generate a plan, or pick one in the browser.");
        });
        return;
    };
    ui.horizontal(|ui| {
        ui.heading(plan.title());
        ui.label(format!("\"{}\"", plan.instruction));
        if ui
            .add_enabled(!plan.iterations.is_empty(), egui::Button::new("Execute"))
            .on_hover_text("Run the chosen iteration in the world (E)")
            .clicked()
        {
            commands.push(Command::Job(JobCommand::Execute));
        }
        ui.add_enabled_ui(!plan.iterations.is_empty(), |ui| {
            ui.menu_button("Export", |ui| export_menu_ui(ui, commands))
                .response
                .on_hover_text(
                    "GIF, MP4 or PNG strip of the chosen iteration or of all (Ctrl+S: GIF)",
                );
        });
    });
    egui::ScrollArea::vertical().show(ui, |ui| {
        let thumb = thumb_size(ui, plan, studio.demo);
        for (k, iteration) in plan.iterations.iter().enumerate() {
            iteration_row_ui(ui, studio, plan, k, iteration, thumb, textures, commands);
            ui.add_space(6.0);
        }
        if plan.iterations.is_empty() {
            ui.weak("Sampling the first iteration…");
        }
        if let Some(rollout) = &plan.rollout {
            ui.horizontal(|ui| {
                ui.strong("Rollout");
                let (text, colour) = if rollout.success {
                    ("success", Color32::from_rgb(80, 180, 90))
                } else {
                    ("failure", Color32::from_rgb(220, 80, 70))
                };
                ui.colored_label(colour, format!("{text} in {} steps", rollout.steps));
            });
            frames_ui(
                ui,
                studio,
                plan.id.0,
                ROLLOUT_ROW,
                &rollout.frames,
                thumb,
                None,
                textures,
                commands,
            );
        }
        ui.separator();
        compare::compare_ui(ui, studio, plan, textures, heatmap, commands);
    });
}

/// One entry per (scope, format); written by a background job under the store's `exports/`.
fn export_menu_ui(ui: &mut egui::Ui, commands: &mut Vec<Command>) {
    for (all_iterations, scope) in [(false, "Chosen iteration"), (true, "All iterations")] {
        ui.label(scope);
        for format in VideoFormat::ALL {
            if ui
                .button(format!("{scope} as {}", format.label()))
                .clicked()
            {
                commands.push(Command::Job(JobCommand::Export {
                    format,
                    all_iterations,
                }));
                ui.close();
            }
        }
    }
}

/// Thumbnails fill the width (all frames of a row visible), between 48 and 160 points (320
/// in demo mode).
fn thumb_size(ui: &egui::Ui, plan: &PlanView, demo: bool) -> f32 {
    let frames = plan.frame_count().max(1) as f32;
    let spacing = ui.spacing().item_spacing.x;
    let width = ui.available_width() - 24.0;
    let largest = if demo { 320.0 } else { 160.0 };
    ((width - spacing * frames) / frames).clamp(48.0, largest)
}

#[allow(clippy::too_many_arguments)]
fn iteration_row_ui(
    ui: &mut egui::Ui,
    studio: &Studio,
    plan: &PlanView,
    k: usize,
    iteration: &IterationView,
    thumb: f32,
    textures: &mut TextureCache,
    commands: &mut Vec<Command>,
) {
    ui.horizontal(|ui| {
        ui.strong(format!("Iteration {k}"));
        if k == plan.chosen && plan.iterations.len() > 1 {
            ui.label("(chosen)");
        }
        match iteration.critique.as_ref().map(|c| c.accepted) {
            Some(Some(true)) => {
                ui.colored_label(Color32::from_rgb(80, 180, 90), "accepted");
            }
            Some(Some(false)) => {
                ui.colored_label(Color32::from_rgb(220, 80, 70), "rejected");
            }
            Some(None) => {
                ui.colored_label(Color32::from_rgb(200, 160, 60), "critic unavailable");
            }
            None => {
                ui.weak("not critiqued");
            }
        }
        // Plans read back from the store carry no timings.
        if iteration.sample_ms > 0.0 {
            ui.weak(format!("sampled in {:.0} ms", iteration.sample_ms));
        }
    });
    let highlight = studio
        .highlight
        .filter(|(row, _)| *row == k)
        .and_then(|(_, f)| iteration.critique.as_ref()?.findings.get(f))
        .map(|f| (f.frame_idx, f.region));
    frames_ui(
        ui,
        studio,
        plan.id.0,
        k,
        &iteration.frames,
        thumb,
        highlight,
        textures,
        commands,
    );
    if let Some(critique) = &iteration.critique {
        ui.label(format!("{}: {}", critique.critic, critique.feedback));
        for (i, finding) in critique.findings.iter().enumerate() {
            let text = format!("frame {}: {}", finding.frame_idx, finding.text);
            if ui.link(text).clicked() {
                commands.push(Command::SelectFinding {
                    iteration: k,
                    finding: i,
                });
            }
        }
    }
}

/// A row of frame thumbnails; the current frame outlined, `highlight` = (frame, region) boxed.
#[allow(clippy::too_many_arguments)]
fn frames_ui(
    ui: &mut egui::Ui,
    studio: &Studio,
    plan: u64,
    row: usize,
    frames: &[Rgb8Image],
    thumb: f32,
    highlight: Option<(usize, [u32; 4])>,
    textures: &mut TextureCache,
    commands: &mut Vec<Command>,
) {
    ui.horizontal(|ui| {
        for (i, frame) in frames.iter().enumerate() {
            let key = TextureKey::Frame {
                plan,
                row,
                frame_idx: i,
            };
            let texture = textures.get_or_upload(ui.ctx(), key, || frame.clone());
            let (rect, response) = ui.allocate_exact_size(Vec2::splat(thumb), Sense::click());
            let name = if row == ROLLOUT_ROW {
                format!("rollout frame {i}")
            } else {
                format!("iteration {row} frame {i}")
            };
            response
                .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, name.clone()));
            ui.painter().image(
                texture.id(),
                rect,
                Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                Color32::WHITE,
            );
            if i == studio.playback.frame_idx {
                ui.painter().rect_stroke(
                    rect,
                    0.0,
                    Stroke::new(2.0, ui.visuals().selection.stroke.color),
                    egui::StrokeKind::Outside,
                );
            }
            if let Some((_, [x, y, w, h])) = highlight.filter(|(f, _)| *f == i) {
                let scale = thumb / frame.width.max(1) as f32;
                let region = Rect::from_min_size(
                    rect.min + Vec2::new(x as f32, y as f32) * scale,
                    Vec2::new(w as f32, h as f32) * scale,
                );
                ui.painter().rect_stroke(
                    region,
                    0.0,
                    Stroke::new(2.0, Color32::from_rgb(255, 210, 0)),
                    egui::StrokeKind::Outside,
                );
            }
            if response.on_hover_text(format!("frame {i}")).clicked() {
                commands.push(Command::SeekFrame(i));
            }
        }
    });
}
