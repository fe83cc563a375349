use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use tempfile::TempDir;

use super::*;
use crate::model::test_tokenizer;

const WORDS: [&str; 12] = [
    "<|startoftext|>",
    "<|endoftext|>",
    "push",
    "the",
    "block",
    "to",
    "target",
    "open",
    "door",
    "press",
    "button",
    "[UNK]",
];
const WIDTH: usize = 16;

fn tiny_clip() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_clip(dir.path(), WIDTH);
    dir
}

/// Writes a 2-layer CLIP text model `width` wide with random weights into `dir` as a Hugging
/// Face CLIP folder (a CLIPModel config, so the `text_config` path is the one taken).
pub(crate) fn write_tiny_clip(dir: &Path, width: usize) {
    std::fs::create_dir_all(dir).expect("clip folder");
    let config = serde_json::json!({
        "model_type": "clip",
        "text_config": {
            "vocab_size": WORDS.len(),
            "hidden_size": width,
            "intermediate_size": 32,
            "max_position_embeddings": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": width,
            "hidden_act": "quick_gelu",
        },
        "vision_config": {"hidden_size": 8},
    });
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).expect("config");
    let cfg = read_config(&dir.join(CONFIG_FILE)).expect("tiny config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    ClipTextTransformer::new(vb.pp(PREFIX), &cfg).expect("random text model");
    // A vision tensor too: a CLIPModel file holds both towers and only the text one is read.
    vb.pp("vision_model")
        .get((2, 2), "stray")
        .expect("vision tensor");
    varmap.save(dir.join(WEIGHTS_FILE)).expect("safetensors");
    test_tokenizer::write(
        &dir.join(TOKENIZER_FILE),
        &WORDS,
        Some(("<|startoftext|>", "<|endoftext|>")),
    );
}

fn load(dir: &Path) -> Result<ClipTextEncoder, ModelError> {
    ClipTextEncoder::load(dir, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("difference")
}

#[test]
fn encodes_last_hidden_states_one_row_per_text() {
    let dir = tiny_clip();
    let clip = load(dir.path()).expect("loads");
    assert_eq!(clip.dim(), WIDTH);
    // 5 words + start + end = 7 tokens; the 2-word text is padded to 7.
    let t = clip
        .encode(&["push the block to target", "open door"], &Device::Cpu)
        .expect("encodes");
    assert_eq!(t.dims(), &[2, 7, WIDTH]);
    assert_eq!(t.dtype(), DType::F32);
    // Longer texts are cut to the 8 positions of the table.
    let long = clip
        .encode(&["push the block to the target to the door"], &Device::Cpu)
        .expect("long text");
    assert_eq!(long.dims(), &[1, 8, WIDTH]);
}

#[test]
fn same_text_same_tokens_alone_again_or_in_a_batch() {
    let dir = tiny_clip();
    let clip = load(dir.path()).expect("loads");
    let a = clip.encode(&["open door"], &Device::Cpu).expect("alone");
    let again = load(dir.path())
        .expect("reloads")
        .encode(&["open door"], &Device::Cpu)
        .expect("again");
    assert_eq!(max_abs_diff(&a, &again), 0.0, "deterministic");
    let batch = clip
        .encode(&["open door", "push the block to target"], &Device::Cpu)
        .expect("batch");
    let padded = batch.get(0).and_then(|r| r.narrow(0, 0, 4)).expect("row");
    assert!(
        max_abs_diff(&a.squeeze(0).expect("squeeze"), &padded) < 1e-5,
        "a text's tokens do not depend on the batch it is padded in"
    );
}

#[test]
fn different_texts_give_different_tokens() {
    let dir = tiny_clip();
    let clip = load(dir.path()).expect("loads");
    let t = clip
        .encode(&["open the door", "press the button"], &Device::Cpu)
        .expect("encodes");
    let a = t.get(0).expect("row 0");
    let b = t.get(1).expect("row 1");
    assert!(max_abs_diff(&a, &b) > 1e-3);
}

#[test]
fn missing_or_corrupt_files_are_named() {
    let missing = tempfile::tempdir().expect("temp dir");
    let err = load(&missing.path().join("nowhere")).expect_err("no folder");
    assert!(err.to_string().contains("config.json"), "{err}");

    for (file, junk, expected) in [
        (CONFIG_FILE, "{not json", "not JSON"),
        (WEIGHTS_FILE, "garbage", "safetensors"),
        (TOKENIZER_FILE, "{}", "tokenizer"),
    ] {
        let dir = tiny_clip();
        std::fs::write(dir.path().join(file), junk).expect("corrupt");
        let message = load(dir.path()).expect_err(file).to_string();
        assert!(
            message.contains(file) && message.contains(expected),
            "{file}: {message}"
        );
    }

    let dir = tiny_clip();
    std::fs::remove_file(dir.path().join(TOKENIZER_FILE)).expect("remove");
    let message = load(dir.path()).expect_err("no tokenizer").to_string();
    assert!(message.contains(TOKENIZER_FILE), "{message}");
}

#[test]
fn weights_of_another_shape_are_refused() {
    let dir = tiny_clip();
    let config_path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace("\"intermediate_size\":32", "\"intermediate_size\":64");
    std::fs::write(&config_path, text).expect("edit");
    let message = load(dir.path()).expect_err("mis-shaped").to_string();
    assert!(
        message.contains(WEIGHTS_FILE) && message.contains("shape"),
        "{message}"
    );
}

#[test]
fn unsupported_activation_is_refused() {
    let dir = tiny_clip();
    let config_path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace("quick_gelu", "gelu");
    std::fs::write(&config_path, text).expect("edit");
    let message = load(dir.path()).expect_err("gelu").to_string();
    assert!(
        message.contains("gelu") && message.contains(CONFIG_FILE),
        "{message}"
    );
}

#[test]
fn a_tokenizer_that_pads_by_itself_changes_nothing() {
    let dir = tiny_clip();
    let before = load(dir.path())
        .expect("loads")
        .encode(&["open door"], &Device::Cpu)
        .expect("encodes");
    let path = dir.path().join(TOKENIZER_FILE);
    let mut tokenizer = Tokenizer::from_file(&path).expect("tokenizer");
    tokenizer.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::Fixed(8),
        pad_id: 1,
        ..Default::default()
    }));
    tokenizer.save(&path, false).expect("save");
    let after = load(dir.path())
        .expect("loads")
        .encode(&["open door"], &Device::Cpu)
        .expect("encodes");
    assert_eq!(after.dims(), before.dims(), "no padding to 8 for one text");
    assert_eq!(max_abs_diff(&before, &after), 0.0);
}
