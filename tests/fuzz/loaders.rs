//! Every loader under test as one call from input on disk to "loaded" or a clean error: the
//! same calls the CLI and the studio make, down to what they do with the result (a dataset is
//! also read into training clips, a critic reply also judged).

use std::path::Path;

use candle_core::Device;
use videoagent::critic::{feedback_sentence, judge_verdict, reply_text};
use videoagent::model::train::TrainData;
use videoagent::model::{Checkpoint, VideoModel};
use videoagent::store::Dataset;
use videoagent::store::db::{Store, import_json};
use videoagent::store::plan_record::read_plan;

use super::fixtures::tiny_model;

pub type Outcome = Result<(), String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A U-Net checkpoint (safetensors or PyTorch zip) read and built as the tiny network.
pub fn checkpoint(path: &Path) -> Outcome {
    Checkpoint::read(path)
        .and_then(|c| c.into_unet(&tiny_model().unet, &Device::Cpu))
        .map(drop)
        .map_err(text)
}

/// A model folder loaded as `videoagent plan` loads it. A loaded model's config must be one
/// it can sample with, not one that allocates absurdly at the first plan.
pub fn model_folder(dir: &Path) -> Outcome {
    let model = VideoModel::load(dir, &Device::Cpu).map_err(text)?;
    let (h, w) = model.config.unet.image_size;
    assert!(
        h <= 1024 && w <= 1024 && model.config.unet.frames <= 64,
        "an unusable config loaded: {:?}",
        model.config
    );
    assert!(model.config.timesteps <= 100_000, "{:?}", model.config);
    Ok(())
}

/// A dataset opened and read as training reads it: every episode's trajectory and clips.
pub fn dataset(dir: &Path) -> Outcome {
    let ds = Dataset::open(dir).map_err(text)?;
    for i in 0..ds.episodes().len() {
        ds.trajectory(i).map_err(text)?;
        ds.clip(i, 0).map_err(text)?;
    }
    TrainData::load(&ds, 8, || {}).map(drop).map_err(text)
}

/// A plan folder read, then recorded in `store` as `videoagent plan --store` records it.
pub fn plan_folder(dir: &Path, store: &Store) -> Outcome {
    read_plan(dir).map_err(text)?;
    videoagent::store::db::add_plan_folder(store, dir)
        .map(drop)
        .map_err(text)
}

/// A JSON export imported into `store`.
pub fn store_export(dir: &Path, store: &Store) -> Outcome {
    import_json(store, dir, "fuzz").map(drop).map_err(text)
}

/// A chat-completions body as the VLM critic reads it: the answer, its verdict and the
/// feedback sentence.
pub fn critic_reply(body: &[u8]) -> Outcome {
    let body = std::str::from_utf8(body).map_err(text)?;
    let answer = reply_text(body)?;
    judge_verdict(&answer)?;
    let sentence = feedback_sentence(&answer);
    assert!(
        sentence.split_whitespace().count() <= videoagent::critic::MAX_FEEDBACK_WORDS,
        "{sentence}"
    );
    Ok(())
}
