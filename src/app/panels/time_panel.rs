//! Bottom panel: playback controls and the frame scrubber shared by every row, and the jobs.

use crate::app::StudioApp;
use crate::app::command::{Command, JobCommand};

pub fn time_panel(ui: &mut egui::Ui, app: &StudioApp, commands: &mut Vec<Command>) {
    egui::Panel::bottom("time_panel").show(ui, |ui| {
        let studio = &app.studio;
        let frames = studio.selected_plan().map_or(0, |p| p.frame_count());
        ui.horizontal(|ui| {
            if ui
                .button("|<")
                .on_hover_text("First frame (Home)")
                .clicked()
            {
                commands.push(Command::FirstFrame);
            }
            if ui
                .button("<")
                .on_hover_text("Previous frame (Left)")
                .clicked()
            {
                commands.push(Command::StepFrames(-1));
            }
            let play = if studio.playback.playing {
                "Pause"
            } else {
                "Play"
            };
            if ui.button(play).on_hover_text("Space").clicked() {
                commands.push(Command::TogglePlay);
            }
            if ui.button(">").on_hover_text("Next frame (Right)").clicked() {
                commands.push(Command::StepFrames(1));
            }
            if ui.button(">|").on_hover_text("Last frame (End)").clicked() {
                commands.push(Command::LastFrame);
            }
            let mut frame = studio.playback.frame_idx;
            let last = frames.saturating_sub(1);
            let slider = egui::Slider::new(&mut frame, 0..=last).text(format!("frame / {last}"));
            if ui.add_enabled(frames > 0, slider).changed() {
                commands.push(Command::SeekFrame(frame));
            }
        });
        if let Some(progress) = app.generate_progress() {
            ui.horizontal(|ui| {
                let fraction = if progress.total == 0 {
                    0.0
                } else {
                    progress.step as f32 / progress.total as f32
                };
                ui.label(format!("Generating: iteration {}", progress.iteration));
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(240.0)
                        .text(format!("step {}/{}", progress.step, progress.total)),
                );
                if ui.button("Cancel").clicked() {
                    commands.push(Command::Job(JobCommand::Cancel));
                }
            });
        }
    });
}
