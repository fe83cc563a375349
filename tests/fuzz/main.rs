//! Fuzzing the loaders with proptest: every loader of untrusted input (checkpoints as
//! safetensors and PyTorch zips, model configs, dataset manifests, plan folders, store JSON
//! exports, chat-completions replies) gets mutations of a valid input and pure random bytes.
//! The property: it loads or returns an error; it never panics and never asks for an absurd
//! allocation (this binary's allocator refuses any single request over 1 GiB, which aborts
//! the test). Then every file of `tests/corpus/<loader>/` must be refused cleanly.
//!
//! Case counts are small for CI (a few seconds per loader); `VIDEOAGENT_FUZZ_CASES=N` runs N
//! cases per property for a long session (docs/STORE.md has the command).

mod fixtures;
mod loaders;
mod mutate;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use videoagent::store::db::Store;

use fixtures::{Fixtures, copy_folder};
use mutate::{ByteOp, JsonOp, apply_bytes, apply_json, byte_ops, json_ops};

/// Largest single allocation a loader may ask for while fuzzed.
const MAX_ALLOCATION: usize = 1 << 30;

/// The system allocator, refusing absurd requests: a loader that sizes a buffer from a header
/// it has not checked fails here instead of passing on a machine with enough swap.
struct Bounded;

// Allocator glue only forwards to `System`; the lint is allowed for this item alone.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

static FIXTURES: LazyLock<Fixtures> = LazyLock::new(Fixtures::new);

/// `cases` for CI, or `$VIDEOAGENT_FUZZ_CASES` for a long session.
fn config(cases: u32) -> Config {
    let cases = std::env::var("VIDEOAGENT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // Regressions live in tests/corpus, not in proptest's own files.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Writes `bytes` over `name` in a fresh copy of `folder`.
fn with_file(folder: &Path, scratch: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = FIXTURES.scratch(scratch);
    copy_folder(folder, &dir);
    std::fs::write(dir.join(name), bytes).expect("write case");
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("fixture")
}

/// A safetensors file with `header` as its JSON header and the data of `base`.
fn with_header(base: &[u8], header: &[u8]) -> Vec<u8> {
    let old = u64::from_le_bytes(base[..8].try_into().expect("8 bytes")) as usize;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(&base[8 + old..]);
    out
}

fn checkpoint_bytes(bytes: &[u8], scratch: &str) -> loaders::Outcome {
    let dir = FIXTURES.scratch(scratch);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, bytes).expect("write case");
    loaders::checkpoint(&path)
}

fn torch_zip(pkl: &[u8], storages: &[(String, Vec<u8>)]) -> Vec<u8> {
    fixtures::zip_entries(pkl, storages)
}

fn store() -> &'static Store {
    static STORE: LazyLock<Store> = LazyLock::new(|| {
        Store::open(&FIXTURES.root.path().join("target-store"))
            .expect("store")
            .0
    });
    &STORE
}

#[derive(Clone, Debug)]
enum Mutation {
    Bytes(Vec<ByteOp>),
    Json(Vec<JsonOp>),
    Random(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => byte_ops().prop_map(Mutation::Bytes),
        2 => json_ops().prop_map(Mutation::Json),
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Mutation::Random),
    ]
}

fn mutated(base: &[u8], m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Bytes(ops) => apply_bytes(base, ops),
        Mutation::Json(ops) => apply_json(base, ops),
        Mutation::Random(bytes) => bytes.clone(),
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn safetensors_checkpoints(m in mutation()) {
        let base = read(&FIXTURES.model.join("model.safetensors"));
        let len = u64::from_le_bytes(base[..8].try_into().expect("8 bytes")) as usize;
        let bytes = match &m {
            // JSON mutations go to the header, keeping the file framed.
            Mutation::Json(ops) => with_header(&base, &apply_json(&base[8..8 + len], ops)),
            other => mutated(&base, other),
        };
        let _ = checkpoint_bytes(&bytes, "safetensors");
    }

    #[test]
    fn pytorch_zip_checkpoints(ops in byte_ops(), in_pickle in any::<bool>()) {
        let (pkl, storages) = fixtures::torch_pickle(&FIXTURES.tensors, &HashMap::new());
        let bytes = if in_pickle {
            torch_zip(&apply_bytes(&pkl, &ops), &storages)
        } else {
            apply_bytes(&torch_zip(&pkl, &storages), &ops)
        };
        let _ = checkpoint_bytes(&bytes, "pytorch");
    }

    #[test]
    fn pytorch_zip_shape_claims(
        which in any::<proptest::sample::Index>(),
        dims in proptest::collection::vec(0..=i32::MAX as usize, 0..5),
    ) {
        let mut names: Vec<&String> = FIXTURES.tensors.keys().collect();
        names.sort();
        let name = names[which.index(names.len())].clone();
        let real = FIXTURES.tensors[&name].dims().to_vec();
        let claim = HashMap::from([(name, dims.clone())]);
        let (pkl, storages) = fixtures::torch_pickle(&FIXTURES.tensors, &claim);
        let result = checkpoint_bytes(&torch_zip(&pkl, &storages), "shapes");
        if dims != real {
            prop_assert!(result.is_err(), "a {dims:?} claim over {real:?} data loaded");
        }
    }

    #[test]
    fn model_configs(m in mutation()) {
        let bytes = mutated(&read(&FIXTURES.model.join("config.json")), &m);
        let dir = with_file(&FIXTURES.model, "model", "config.json", &bytes);
        let _ = loaders::model_folder(&dir);
    }

    #[test]
    fn dataset_manifests(m in mutation()) {
        let bytes = mutated(&read(&FIXTURES.dataset.join("manifest.json")), &m);
        let dir = with_file(&FIXTURES.dataset, "dataset", "manifest.json", &bytes);
        let _ = loaders::dataset(&dir);
    }

    #[test]
    fn plan_folders(m in mutation()) {
        let bytes = mutated(&read(&FIXTURES.plan.join("plan.json")), &m);
        let dir = with_file(&FIXTURES.plan, "plan", "plan.json", &bytes);
        let _ = loaders::plan_folder(&dir, store());
    }

    #[test]
    fn store_exports(m in mutation()) {
        let bytes = mutated(&read(&FIXTURES.export.join("store.json")), &m);
        let dir = with_file(&FIXTURES.export, "export", "store.json", &bytes);
        let _ = loaders::store_export(&dir, store());
        // Whatever was imported left a store that checks clean.
        let report = store().check().expect("check");
        prop_assert!(!report.has_unrepaired(), "{report}");
    }

    #[test]
    fn critic_replies(m in mutation(), text in ".{0,300}") {
        let _ = loaders::critic_reply(&mutated(&FIXTURES.reply, &m));
        let _ = loaders::critic_reply(text.as_bytes());
        let wrapped = serde_json::json!({"choices": [{"message": {"content": text}}]});
        let _ = loaders::critic_reply(wrapped.to_string().as_bytes());
    }
}

#[test]
fn the_valid_inputs_load() {
    let weights = read(&FIXTURES.model.join("model.safetensors"));
    assert_eq!(checkpoint_bytes(&weights, "valid"), Ok(()));
    let (pkl, storages) = fixtures::torch_pickle(&FIXTURES.tensors, &HashMap::new());
    assert_eq!(
        checkpoint_bytes(&torch_zip(&pkl, &storages), "valid"),
        Ok(())
    );
    assert_eq!(loaders::model_folder(&FIXTURES.model), Ok(()));
    assert_eq!(loaders::dataset(&FIXTURES.dataset), Ok(()));
    assert_eq!(loaders::plan_folder(&FIXTURES.plan, store()), Ok(()));
    assert_eq!(loaders::critic_reply(&FIXTURES.reply), Ok(()));
    let (fresh, _) = Store::open(&FIXTURES.scratch("fresh-store").join("st")).expect("store");
    assert_eq!(loaders::store_export(&FIXTURES.export, &fresh), Ok(()));
}

/// Every file under `tests/corpus/<loader>/` goes through its loader and is refused cleanly.
#[test]
fn every_corpus_file_is_refused() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut loaders_seen = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let loader = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in &files {
            let bytes = read(file);
            let outcome = match loader.as_str() {
                "checkpoint" => checkpoint_bytes(&bytes, "corpus-checkpoint"),
                "model_config" => loaders::model_folder(&with_file(
                    &FIXTURES.model,
                    "corpus-model",
                    "config.json",
                    &bytes,
                )),
                "dataset_manifest" => loaders::dataset(&with_file(
                    &FIXTURES.dataset,
                    "corpus-dataset",
                    "manifest.json",
                    &bytes,
                )),
                "plan_json" => loaders::plan_folder(
                    &with_file(&FIXTURES.plan, "corpus-plan", "plan.json", &bytes),
                    store(),
                ),
                // Hand-made exports name frames that are not there: no frames folder.
                "store_json" => {
                    let dir = FIXTURES.scratch("corpus-export");
                    std::fs::write(dir.join("store.json"), &bytes).expect("write");
                    loaders::store_export(&dir, store())
                }
                "critic_reply" => loaders::critic_reply(&bytes),
                other => panic!("no loader for tests/corpus/{other}"),
            };
            assert!(outcome.is_err(), "{} was accepted", file.display());
        }
        loaders_seen.push((loader, files.len()));
    }
    eprintln!("corpus files refused per loader: {loaders_seen:?}");
    assert!(loaders_seen.len() >= 6, "{loaders_seen:?}");
}
