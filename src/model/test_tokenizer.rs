//! Tiny word-level `tokenizer.json` files for tests of models that load a Hugging Face
//! tokenizer (CLIP text, the local VLM critic): lower-cased, split on whitespace and
//! punctuation, one id per word, with a template adding start/end tokens where asked.

use std::path::Path;

use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::utils::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;

/// Writes a tokenizer whose ids are the positions of `words` (the unknown word is `[UNK]`,
/// appended if absent). `wrap`: (start, end) tokens, both in `words`, added around every text.
pub fn write(path: &Path, words: &[&str], wrap: Option<(&str, &str)>) {
    let mut vocab: Vec<&str> = words.to_vec();
    if !vocab.contains(&"[UNK]") {
        vocab.push("[UNK]");
    }
    let ids: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| ((*w).to_owned(), i.into()))
        .collect();
    let json = serde_json::json!({"type": "WordLevel", "vocab": ids, "unk_token": "[UNK]"});
    // The model's deserializer borrows its strings, so it reads text, not a `Value`.
    let model: WordLevel = serde_json::from_str(&json.to_string()).expect("word-level model");
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(Lowercase))
        .expect("normalizer");
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    if let Some((start, end)) = wrap {
        let id = |w: &str| vocab.iter().position(|v| *v == w).expect("wrap token") as u32;
        let template = TemplateProcessing::builder()
            .try_single(format!("{start} $A {end}"))
            .expect("template")
            .special_tokens(vec![(start, id(start)), (end, id(end))])
            .build()
            .expect("template");
        tokenizer.with_post_processor(Some(template));
    }
    tokenizer.save(path, false).expect("write tokenizer.json");
}
