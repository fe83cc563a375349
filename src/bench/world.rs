//! `bench world`: simulation + rendering throughput of a world on one core (for MetaWorld:
//! the bridge process, with the expert's query, the step and the frames it sends back).

use std::time::Instant;

use serde::Serialize;

use crate::env::{World, WorldError, open_world};

#[derive(Clone, Debug, Serialize)]
pub struct WorldBenchRow {
    pub task: String,
    pub frames: u64,
    /// Steps with rendering (RGB + segmentation) per second, one thread.
    pub frames_per_sec: f64,
    /// Physics steps per second without rendering (the embedded world only: the others
    /// cannot step without the process that also renders).
    pub physics_steps_per_sec: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorldBenchReport {
    pub world: String,
    pub frame_size: u32,
    pub threads_used: usize,
    pub rows: Vec<WorldBenchRow>,
    /// Over all tasks.
    pub frames_per_sec: f64,
}

/// Runs the expert on every task for about `seconds_per_task`, on the calling thread.
pub fn run(
    world_name: &str,
    size: u32,
    seconds_per_task: f64,
) -> Result<WorldBenchReport, WorldError> {
    let mut world = open_world(world_name, size)?;
    let tasks: Vec<String> = world.tasks().into_iter().map(|t| t.name).collect();
    let mut rows = Vec::new();
    let (mut all_frames, mut all_secs) = (0u64, 0f64);
    for task in tasks {
        let (frames, secs) = measure(world.as_mut(), &task, seconds_per_task)?;
        let physics = (world_name == crate::env::tabletop::WORLD_NAME)
            .then(|| crate::env::tabletop::physics_steps_per_sec(&task, seconds_per_task / 2.0));
        all_frames += frames;
        all_secs += secs;
        rows.push(WorldBenchRow {
            task,
            frames,
            frames_per_sec: frames as f64 / secs,
            physics_steps_per_sec: physics,
        });
    }
    Ok(WorldBenchReport {
        world: world_name.to_owned(),
        frame_size: size,
        threads_used: 1,
        rows,
        frames_per_sec: all_frames as f64 / all_secs,
    })
}

/// Expert episodes back to back (reset, then step + render until done) for `seconds`.
fn measure(world: &mut dyn World, task: &str, seconds: f64) -> Result<(u64, f64), WorldError> {
    let start = Instant::now();
    let mut frames = 0u64;
    let mut seed = 0;
    while start.elapsed().as_secs_f64() < seconds {
        world.reset(task, (seed % 3) as usize, seed)?;
        frames += 1;
        loop {
            let action = world.expert_action()?;
            frames += 1;
            if world.step(action)?.done {
                break;
            }
        }
        seed += 1;
    }
    Ok((frames, start.elapsed().as_secs_f64()))
}
