//! Right panel: the annotator's labels for the selected plan (verdict, rating, tags, note,
//! frame marks, pairwise preference), undo/redo and the annotator's name.

use crate::app::command::{Command, Studio};
use crate::app::state::{CompareSource, FrameMark, Preference, Tag, Verdict};

pub fn inspector(ui: &mut egui::Ui, studio: &Studio, commands: &mut Vec<Command>) {
    egui::Panel::right("inspector")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| labels_ui(ui, studio, commands));
        });
}

fn labels_ui(ui: &mut egui::Ui, studio: &Studio, commands: &mut Vec<Command>) {
    ui.heading("Label");
    let mut annotator = studio.annotator.clone();
    ui.horizontal(|ui| {
        let name = ui.label("Annotator");
        if ui
            .text_edit_singleline(&mut annotator)
            .labelled_by(name.id)
            .changed()
        {
            commands.push(Command::SetAnnotator(annotator.clone()));
        }
    });
    let Some(plan) = studio.selected_plan() else {
        ui.weak("No plan selected.");
        return;
    };
    let label = studio.labels.get(&plan.id).cloned().unwrap_or_default();
    ui.horizontal(|ui| {
        let accept = ui.selectable_label(label.verdict == Some(Verdict::Accept), "Accept (A)");
        if accept.clicked() {
            commands.push(Command::SetVerdict(Verdict::Accept));
        }
        let reject = ui.selectable_label(label.verdict == Some(Verdict::Reject), "Reject (R)");
        if reject.clicked() {
            commands.push(Command::SetVerdict(Verdict::Reject));
        }
    });
    let mut auto = studio.auto_advance;
    if ui
        .checkbox(&mut auto, "Next unlabeled after a verdict")
        .changed()
    {
        commands.push(Command::SetAutoAdvance(auto));
    }
    ui.horizontal(|ui| {
        ui.label("Rating");
        for r in 1..=5u8 {
            if ui
                .selectable_label(label.rating == Some(r), r.to_string())
                .on_hover_text(format!("key {r}"))
                .clicked()
            {
                commands.push(Command::SetRating(r));
            }
        }
    });
    ui.label("Tags");
    ui.horizontal_wrapped(|ui| {
        for tag in Tag::ALL {
            if ui
                .selectable_label(label.tags.contains(&tag), tag.label())
                .clicked()
            {
                commands.push(Command::ToggleTag(tag));
            }
        }
    });
    let name = ui.label("Note");
    let mut note = label.note.clone();
    let response = ui
        .add(egui::TextEdit::multiline(&mut note).desired_rows(3))
        .labelled_by(name.id);
    if response.lost_focus() && note != label.note {
        commands.push(Command::SetNote(note));
    }
    ui.separator();
    ui.label("Frame marks");
    let frame_idx = studio.playback.frame_idx;
    let highlighted_region = studio.highlight.and_then(|(k, f)| {
        let finding = plan.iterations.get(k)?.critique.as_ref()?.findings.get(f)?;
        Some((k, finding.region))
    });
    if ui
        .button(format!("Mark frame {frame_idx}"))
        .on_hover_text("Marks the highlighted finding's region, else the whole frame")
        .clicked()
    {
        let (iteration, region) = highlighted_region.unwrap_or_else(|| {
            let side = plan
                .iterations
                .get(plan.chosen)
                .and_then(|it| it.frames.first())
                .map_or(0, |f| f.width);
            (plan.chosen, [0, 0, side, side])
        });
        commands.push(Command::AddMark(FrameMark {
            iteration,
            frame_idx,
            region,
        }));
    }
    for (i, mark) in label.marks.iter().enumerate() {
        ui.horizontal(|ui| {
            ui.label(format!(
                "iteration {} frame {} at {:?}",
                mark.iteration, mark.frame_idx, mark.region
            ));
            if ui.small_button("x").on_hover_text("Remove").clicked() {
                commands.push(Command::RemoveMark(i));
            }
        });
    }
    ui.separator();
    ui.label("Compare A with B");
    if let (CompareSource::Iteration(a), CompareSource::Iteration(b)) =
        (studio.compare.a, studio.compare.b)
    {
        ui.weak(format!("A = iteration {a}, B = iteration {b}"));
        ui.horizontal_wrapped(|ui| {
            for p in Preference::ALL {
                let on = label.preference == Some((a, b, p));
                if ui.selectable_label(on, p.label()).clicked() {
                    commands.push(Command::SetPreference(p));
                }
            }
        });
    } else {
        ui.weak("Pick two iterations in the compare view.");
    }
    ui.separator();
    ui.horizontal(|ui| {
        if ui
            .add_enabled(studio.can_undo(), egui::Button::new("Undo"))
            .on_hover_text("Ctrl+Z")
            .clicked()
        {
            commands.push(Command::Undo);
        }
        if ui
            .add_enabled(studio.can_redo(), egui::Button::new("Redo"))
            .on_hover_text("Ctrl+Shift+Z")
            .clicked()
        {
            commands.push(Command::Redo);
        }
    });
}
