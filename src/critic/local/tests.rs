use std::collections::HashMap;

use candle_nn::VarMap;
use tempfile::TempDir;

use super::*;
use crate::critic::Verdict;
use crate::env::Observation;
use crate::model::test_tokenizer;

/// Only `accept` and `reject` (the last two ids) start with A or R: with those two pushed
/// out of reach, random weights cannot answer Accept or Reject by chance.
const WORDS: [&str; 12] = [
    "<|endoftext|>",
    "<END>",
    "blue",
    "block",
    "moves",
    "left",
    "the",
    "gripper",
    "question",
    "[UNK]",
    "accept",
    "reject",
];
const ACCEPT: usize = 10;
const REJECT: usize = 11;
const END: usize = 0;
const BIAS: &str = "text_model.lm_head.linear.bias";

fn tiny_moondream() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_moondream(dir.path());
    dir
}

/// Writes into `dir` a Moondream with a 28-pixel image (2 x 2 patches), no vision blocks and
/// a 16-wide, one-layer Phi decoder: candle's config layout, random weights, the word
/// tokenizer above.
pub(crate) fn write_tiny_moondream(dir: &Path) {
    let config = serde_json::json!({
        "phi_config": {
            "vocab_size": WORDS.len(),
            "n_positions": 512,
            "n_embd": 16,
            "n_layer": 1,
            "n_inner": null,
            "n_head": 2,
            "rotary_dim": 4,
            "activation_function": "gelu",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": false,
            "pad_vocab_size_multiple": 1,
        },
        "vision_config": {
            // The patch embedding of candle's Moondream is fixed at 588 -> 1152.
            "image_embedding_dim": 1152,
            "model_dim": 16,
            "hidden_dim": 8,
            "hidden_features": 8,
            "embed_len": 4,
            "embed_dim": 1152,
            "num_blocks": 0,
            "num_heads": 1,
            "act": "gelu_pytorch_tanh",
        },
    });
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).expect("config");
    let cfg = read_config(&dir.join(CONFIG_FILE)).expect("tiny config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    moondream::Model::new(&cfg, vb).expect("random model");
    varmap.save(dir.join(WEIGHTS_FILE)).expect("safetensors");
    test_tokenizer::write(&dir.join(TOKENIZER_FILE), &WORDS, None);
}

/// Rewrites the output bias: the words `ids` get `value`, the others 0 (1e3 makes greedy
/// decoding always pick it, -1e3 never).
fn bias_words(dir: &Path, ids: &[usize], value: f32) {
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).expect("weights");
    let mut bias = vec![0f32; WORDS.len()];
    for &id in ids {
        bias[id] = value;
    }
    tensors.insert(
        BIAS.to_owned(),
        Tensor::from_vec(bias, WORDS.len(), &Device::Cpu).expect("bias"),
    );
    candle_core::safetensors::save(&tensors, &path).expect("save");
}

fn frame(shade: u8) -> Rgb8Image {
    Rgb8Image {
        width: 16,
        height: 16,
        pixels: vec![shade; 16 * 16 * 3],
    }
}

fn review(critic: &LocalVlmCritic, plan: &[Rgb8Image]) -> Review {
    let first = Observation::from_image(frame(200));
    critic.review(&CriticInput {
        first: &first,
        plan,
        task: "push",
        instruction: "push the block to the target",
    })
}

fn load(dir: &Path) -> Result<LocalVlmCritic, CriticError> {
    LocalVlmCritic::load(dir, &Device::Cpu)
}

#[test]
fn random_weights_run_end_to_end_and_are_unavailable() {
    let dir = tiny_moondream();
    bias_words(dir.path(), &[ACCEPT, REJECT], -1e3);
    let critic = load(dir.path()).expect("loads");
    assert_eq!(critic.name(), "local");
    assert_eq!(critic.image_side, 28);
    let plan = vec![frame(40); 7];
    let r = review(&critic, &plan);
    match &r.verdict {
        Verdict::Unavailable { reason } => {
            assert!(reason.contains("neither Accept nor Reject"), "{reason}");
        }
        other => panic!("gibberish judged as {other:?}"),
    }
    assert!(r.feedback.is_empty());
    assert_eq!(
        r,
        Review {
            latency: r.latency,
            ..review(&critic, &plan)
        }
    );
}

#[test]
fn a_judge_that_says_reject_gets_a_clamped_feedback_sentence() {
    let dir = tiny_moondream();
    bias_words(dir.path(), &[REJECT], 1e3);
    let critic = load(dir.path()).expect("loads");
    let r = review(&critic, &[frame(40), frame(90)]);
    assert_eq!(r.verdict, Verdict::Reject);
    // The feedback question decodes 60 tokens of "reject"; the sentence is cut at 20 words.
    assert_eq!(
        r.feedback.split_whitespace().count(),
        super::super::MAX_FEEDBACK_WORDS
    );
    assert!(r.feedback.starts_with("reject reject") && r.feedback.ends_with('.'));
}

#[test]
fn a_judge_that_says_accept_accepts_and_a_stop_token_ends_the_answer() {
    let dir = tiny_moondream();
    bias_words(dir.path(), &[ACCEPT], 1e3);
    let r = review(&load(dir.path()).expect("loads"), &[frame(40)]);
    assert_eq!(r.verdict, Verdict::Accept);

    bias_words(dir.path(), &[END], 1e3);
    let r = review(&load(dir.path()).expect("loads"), &[frame(40)]);
    match &r.verdict {
        Verdict::Unavailable { reason } => assert!(reason.contains("\"\""), "{reason}"),
        other => panic!("an empty answer judged as {other:?}"),
    }
}

#[test]
fn bad_plans_are_unavailable_not_panics() {
    let dir = tiny_moondream();
    let critic = load(dir.path()).expect("loads");
    let r = review(&critic, &[]);
    assert_eq!(
        r.verdict,
        Verdict::Unavailable {
            reason: "the plan has no frames".into()
        }
    );
    let broken = Rgb8Image {
        width: 16,
        height: 16,
        pixels: vec![0; 5],
    };
    let r = review(&critic, &[broken]);
    match &r.verdict {
        Verdict::Unavailable { reason } => assert!(reason.contains("malformed"), "{reason}"),
        other => panic!("a malformed frame judged as {other:?}"),
    }
}

#[test]
fn missing_files_are_named() {
    let nowhere = tempfile::tempdir().expect("temp dir");
    let err = load(&nowhere.path().join("moondream")).expect_err("no folder");
    assert!(err.to_string().contains(CONFIG_FILE), "{err}");
    for file in [WEIGHTS_FILE, TOKENIZER_FILE] {
        let dir = tiny_moondream();
        std::fs::remove_file(dir.path().join(file)).expect("remove");
        let message = load(dir.path()).expect_err(file).to_string();
        assert!(message.contains(file), "{file}: {message}");
    }
}

#[test]
fn corrupt_or_foreign_files_are_refused() {
    for (file, junk, expected) in [
        (CONFIG_FILE, "{\"model_type\": \"llama\"}", "not Moondream"),
        (CONFIG_FILE, "[1, 2]", "not a Moondream config"),
        (WEIGHTS_FILE, "garbage", "safetensors"),
        (TOKENIZER_FILE, "{}", "tokenizer"),
    ] {
        let dir = tiny_moondream();
        std::fs::write(dir.path().join(file), junk).expect("corrupt");
        let message = load(dir.path()).expect_err(file).to_string();
        assert!(
            message.contains(file) && message.contains(expected),
            "{file}: {message}"
        );
    }
}

#[test]
fn weights_of_another_shape_are_refused() {
    let dir = tiny_moondream();
    let config_path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace("\"n_embd\":16", "\"n_embd\":32");
    std::fs::write(&config_path, text).expect("edit");
    let message = load(dir.path()).expect_err("mis-shaped").to_string();
    assert!(
        message.contains(WEIGHTS_FILE) && message.contains("shape"),
        "{message}"
    );
}

#[test]
fn a_hub_config_means_the_moondream2_sizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(CONFIG_FILE);
    std::fs::write(
        &path,
        r#"{"model_type": "moondream1", "phi_config": {"model_type": "phi-msft"}}"#,
    )
    .expect("config");
    let config = read_config(&path).expect("a Hub config");
    let json = format!("{config:?}");
    assert!(
        json.contains("n_embd: 2048") && json.contains("embed_len: 729"),
        "{json}"
    );
}
