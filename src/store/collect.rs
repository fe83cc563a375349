//! Collecting a demonstration dataset: experts run on every (task, view, episode) in
//! parallel and the dataset is written atomically (see [`super::dataset`]).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::dataset::{DatasetError, DatasetWriter, EpisodeMeta, Manifest, write_episode};
use crate::env::{WorldError, demo::record_expert, open_world};

/// What to collect.
#[derive(Clone, Debug)]
pub struct CollectSpec {
    pub world: String,
    pub frame_size: u32,
    pub tasks: Vec<String>,
    pub views: Vec<usize>,
    pub episodes: usize,
    /// Seeds tried per (task, view). When more than `episodes`, the `episodes` shortest
    /// successful demonstrations are kept (the paper's protocol: 25 of 33 per camera) and
    /// the others deleted; otherwise every episode is kept, failures flagged.
    pub candidates: usize,
    /// Episode `e` of view `v` starts from seed `seed_base + e * 3 + v`, so views see
    /// different starts and held-out seeds are easy to keep apart.
    pub seed_base: u64,
    pub threads: usize,
}

impl CollectSpec {
    /// Seeds run per (task, view).
    pub fn tried(&self) -> usize {
        self.candidates.max(self.episodes)
    }

    pub fn seed(&self, episode: usize, view: usize) -> u64 {
        self.seed_base + (episode * 3 + view) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("cancelled")]
    Cancelled,
}

/// Runs the experts and writes the dataset to `out`. `on_episode` is called after each
/// episode (from worker threads); `cancel` stops the collection and leaves nothing behind.
pub fn collect(
    spec: &CollectSpec,
    out: &Path,
    on_episode: &(dyn Fn() + Sync),
    cancel: &AtomicBool,
) -> Result<Manifest, CollectError> {
    let world = open_world(&spec.world, spec.frame_size)?;
    let views = world.views();
    let infos = world.tasks();
    for task in &spec.tasks {
        if !infos.iter().any(|t| &t.name == task) {
            return Err(WorldError::UnknownTask {
                task: task.clone(),
                valid: infos
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
    }
    let mut writer = DatasetWriter::create(out, &spec.world, spec.frame_size)?;
    let jobs: Vec<(String, usize, usize)> = spec
        .tasks
        .iter()
        .flat_map(|t| {
            spec.views
                .iter()
                .flat_map(move |&v| (0..spec.tried()).map(move |e| (t.clone(), v, e)))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    let failed = AtomicBool::new(false);
    let root = writer.root().to_owned();
    let first_error: Mutex<Option<CollectError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..spec.threads.max(1) {
            s.spawn(|| {
                let run = || -> Result<(), CollectError> {
                    let mut world = open_world(&spec.world, spec.frame_size)?;
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(CollectError::Cancelled);
                        }
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let Some((task, view, ep)) = jobs.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return Ok(());
                        };
                        let demo =
                            record_expert(world.as_mut(), task, *view, spec.seed(*ep, *view))?;
                        let info = infos
                            .iter()
                            .find(|t| &t.name == task)
                            .expect("validated above");
                        let meta =
                            write_episode(&root, &demo, &views[*view].name, &info.instructions)?;
                        results
                            .lock()
                            .expect("no worker panics while holding it")
                            .push(meta);
                        on_episode();
                    }
                };
                if let Err(e) = run() {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("no worker panics while holding it")
                        .get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("workers have finished") {
        return Err(e);
    }
    let results = results.into_inner().expect("workers have finished");
    for meta in keep_shortest(spec, results, &root)? {
        writer.register(meta);
    }
    Ok(writer.finish()?)
}

/// With more candidates than episodes, the `episodes` shortest successful demonstrations of
/// each (task, view) (ties: the lower seed); the others' folders are deleted.
fn keep_shortest(
    spec: &CollectSpec,
    mut results: Vec<EpisodeMeta>,
    root: &Path,
) -> Result<Vec<EpisodeMeta>, CollectError> {
    if spec.tried() == spec.episodes {
        return Ok(results);
    }
    results.sort_by(|a, b| {
        (&a.task, a.view, !a.success, a.frames, a.seed)
            .cmp(&(&b.task, b.view, !b.success, b.frames, b.seed))
    });
    let mut kept: Vec<EpisodeMeta> = Vec::new();
    let mut taken: std::collections::HashMap<(String, usize), usize> = Default::default();
    for meta in results {
        let count = taken.entry((meta.task.clone(), meta.view)).or_default();
        if meta.success && *count < spec.episodes {
            *count += 1;
            kept.push(meta);
        } else {
            let dir = root.join(&meta.dir);
            std::fs::remove_dir_all(&dir)
                .map_err(super::atomic::io_error(
                    "cannot remove an unused demonstration",
                    &dir,
                ))
                .map_err(DatasetError::from)?;
        }
    }
    Ok(kept)
}
