//! The one table of keyboard shortcuts: it drives the key handling and the `?` cheat sheet.

use egui::{Key, KeyboardShortcut, Modifiers};

use super::command::{Command, JobCommand};
use super::state::Verdict;

/// A shortcut, what it does, and the command it issues.
pub struct Shortcut {
    pub keys: KeyboardShortcut,
    pub description: &'static str,
    pub command: fn() -> Command,
}

const fn key(modifiers: Modifiers, key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(modifiers, key)
}

/// Longer chords first: egui matches Ctrl+Shift+Z before Ctrl+Z only if asked first.
pub const SHORTCUTS: &[Shortcut] = &[
    Shortcut {
        keys: key(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Z),
        description: "Redo",
        command: || Command::Redo,
    },
    Shortcut {
        keys: key(Modifiers::COMMAND, Key::Z),
        description: "Undo",
        command: || Command::Undo,
    },
    Shortcut {
        keys: key(Modifiers::COMMAND, Key::S),
        description: "Export the chosen iteration as a GIF",
        command: || {
            Command::Job(JobCommand::Export {
                format: crate::store::export::VideoFormat::Gif,
                all_iterations: false,
            })
        },
    },
    Shortcut {
        keys: key(Modifiers::COMMAND, Key::Enter),
        description: "Generate a plan",
        command: || Command::Job(JobCommand::Generate),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Escape),
        description: "Cancel running jobs",
        command: || Command::Job(JobCommand::Cancel),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Space),
        description: "Play / pause",
        command: || Command::TogglePlay,
    },
    Shortcut {
        keys: key(Modifiers::SHIFT, Key::ArrowLeft),
        description: "Back ten frames",
        command: || Command::StepFrames(-10),
    },
    Shortcut {
        keys: key(Modifiers::SHIFT, Key::ArrowRight),
        description: "Forward ten frames",
        command: || Command::StepFrames(10),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::ArrowLeft),
        description: "Previous frame",
        command: || Command::StepFrames(-1),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::ArrowRight),
        description: "Next frame",
        command: || Command::StepFrames(1),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Home),
        description: "First frame",
        command: || Command::FirstFrame,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::End),
        description: "Last frame",
        command: || Command::LastFrame,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::ArrowUp),
        description: "Previous plan",
        command: || Command::PreviousPlan,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::ArrowDown),
        description: "Next plan",
        command: || Command::NextPlan,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::N),
        description: "Next unlabeled plan",
        command: || Command::NextUnlabeled,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::A),
        description: "Accept the plan",
        command: || Command::SetVerdict(Verdict::Accept),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::R),
        description: "Reject the plan",
        command: || Command::SetVerdict(Verdict::Reject),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Num1),
        description: "Rate 1",
        command: || Command::SetRating(1),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Num2),
        description: "Rate 2",
        command: || Command::SetRating(2),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Num3),
        description: "Rate 3",
        command: || Command::SetRating(3),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Num4),
        description: "Rate 4",
        command: || Command::SetRating(4),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::Num5),
        description: "Rate 5",
        command: || Command::SetRating(5),
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::F11),
        description: "Demo mode (full screen, frames only, playing)",
        command: || Command::ToggleDemo,
    },
    Shortcut {
        keys: key(Modifiers::NONE, Key::E),
        description: "Execute the chosen iteration in the world",
        command: || Command::Job(JobCommand::Execute),
    },
];

/// Commands of the shortcuts pressed this frame (none while a text field has the keyboard).
pub fn pressed(ctx: &egui::Context) -> Vec<Command> {
    if ctx.egui_wants_keyboard_input() {
        return Vec::new();
    }
    ctx.input_mut(|input| {
        SHORTCUTS
            .iter()
            .filter(|s| input.consume_shortcut(&s.keys))
            .map(|s| (s.command)())
            .collect()
    })
}

/// The cheat sheet behind `?`.
pub fn cheat_sheet_ui(ui: &mut egui::Ui) {
    egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
        for s in SHORTCUTS {
            ui.monospace(ui.ctx().format_shortcut(&s.keys));
            ui.label(s.description);
            ui.end_row();
        }
    });
}
