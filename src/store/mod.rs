//! Everything the library keeps on disk: demonstration datasets, the plan store (plans,
//! labels, curated set: [`db`]) and its exports, and the atomic file writes every other
//! artefact goes through. What is written here is either complete or absent.

pub mod atomic;
pub mod collect;
pub mod dataset;
pub mod db;
pub mod export;
pub mod json_log;
pub mod lerobot;
pub mod plan_record;
pub mod refine_data;
pub mod relative;

pub use dataset::{Clip, Dataset, DatasetError, EpisodeMeta, Manifest};
