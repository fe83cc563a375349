//! Store behaviour: migrations, labels with audit/undo/redo, filters, recovery, concurrency.

use super::*;

pub(crate) fn frame(seed: u8, size: u32) -> Rgb8Image {
    let pixels = (0..size * size * 3)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    Rgb8Image {
        width: size,
        height: size,
        pixels,
    }
}

pub(crate) fn new_plan(task: &str, seed: u8) -> NewPlan {
    NewPlan {
        world: "tabletop".into(),
        task: task.into(),
        view: usize::from(seed % 3),
        env_seed: u64::from(seed),
        sample_seed: u64::from(seed) + 1,
        instruction: format!("do {task}"),
        model: "test-model".into(),
        sampler: SamplerRecord {
            kind: "ddim".into(),
            steps: 10,
            guidance: 0.0,
            precision: crate::model::precision::Precision::F32,
        },
        start_frame: frame(seed, 8),
    }
}

pub(crate) fn iteration(seed: u8, verdict: Verdict) -> NewIteration {
    NewIteration {
        frames: (0..7).map(|i| frame(seed.wrapping_add(i), 8)).collect(),
        critique: format!("critique {seed}"),
        verdict: Some(verdict),
        findings: vec![Finding {
            frame_idx: 3,
            text: "block vanishes".into(),
            region: None,
        }],
    }
}

fn accept() -> Annotation {
    Annotation {
        verdict: Some(Verdict::Accept),
        rating: Some(4),
        tags: vec!["clean".into()],
        note: "good".into(),
        marks: vec![FrameMark {
            frame_idx: 2,
            region: Rect {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
            note: "here".into(),
        }],
        iteration_preference: Some(IterationPreference {
            a: 0,
            b: 1,
            choice: Preference::BOverA,
        }),
    }
}

fn open(dir: &Path) -> Store {
    let (store, report) = Store::open(dir).expect("open");
    assert!(!report.has_unrepaired(), "{report}");
    store
}

#[test]
fn fresh_store_has_latest_schema_and_reopens_with_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, report) = Store::open(dir.path()).expect("open");
    assert_eq!(report.schema_version, SCHEMA_VERSION);
    assert_eq!(report.migrated_from, Some(0));
    assert!(report.is_clean(), "{report}");
    let id = store.add_plan(&new_plan("push", 1)).expect("add");
    drop(store);
    let (store, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.migrated_from, None);
    assert_eq!(store.plans(&Filter::default()).expect("plans")[0].id, id);
    let mode: String = store
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
    let fk: i64 = store
        .conn()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(fk, 1);
}

#[test]
fn migration_from_version_1_keeps_existing_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut conn = connect(dir.path()).expect("connect");
        schema::migrate_to(&mut conn, 1).expect("v1");
        assert_eq!(schema::version(&conn).expect("version"), 1);
        let f = frames::encode(&frame(1, 4)).expect("encode");
        frames::write_frame(dir.path(), &f).expect("write frame");
        conn.execute(
            "INSERT INTO frames (hash, width, height, bytes) VALUES (?1, 4, 4, 1)",
            [&f.hash],
        )
        .expect("frame row");
        conn.execute(
            "INSERT INTO plans (uid, world, task, view, env_seed, sample_seed, instruction, model,
                                sampler, start_frame, created_ms)
             VALUES ('u1', 'tabletop', 'push', 0, 1, 2, 'push it', 'm',
                     '{\"kind\":\"ddim\",\"steps\":10,\"guidance\":0.0}', ?1, 5)",
            [&f.hash],
        )
        .expect("plan row");
        let has_runs: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'training_runs'",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(has_runs, 0);
    }
    let (store, report) = Store::open(dir.path()).expect("open");
    assert_eq!(report.migrated_from, Some(1));
    assert_eq!(report.schema_version, 2);
    let plans = store.plans(&Filter::default()).expect("plans");
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].uid, "u1");
    let run = store
        .add_training_run(&NewTrainingRun {
            name: "ft".into(),
            out_dir: "runs/ft".into(),
            base_model: "m".into(),
            config: serde_json::json!({"steps": 10}),
            plans: vec![plans[0].id],
        })
        .expect("run");
    store
        .finish_training_run(run, RunStatus::Finished)
        .expect("finish");
    let runs = store.training_runs().expect("runs");
    assert_eq!(runs[0].status, RunStatus::Finished);
    assert_eq!(runs[0].run.plans, vec![plans[0].id]);
}

#[test]
fn newer_schema_is_refused_not_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = Store::open(dir.path()).expect("open");
        store
            .conn()
            .execute("UPDATE schema_version SET version = 99", [])
            .expect("bump");
    }
    match Store::open(dir.path()) {
        Err(StoreError::NewerSchema { found: 99, .. }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn plans_iterations_and_frames_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = store.add_plan(&new_plan("push", 3)).expect("add");
    assert_eq!(
        store.load_frames(id, None).expect("frames"),
        vec![frame(3, 8)]
    );
    assert_eq!(
        store
            .add_iteration(id, &iteration(10, Verdict::Reject))
            .expect("it0"),
        0
    );
    assert_eq!(
        store
            .add_iteration(id, &iteration(20, Verdict::Accept))
            .expect("it1"),
        1
    );
    let last = store.load_frames(id, None).expect("frames");
    assert_eq!(last.len(), 8);
    assert_eq!(last[0], frame(3, 8));
    assert_eq!(last[1], frame(20, 8));
    let first = store.load_frames(id, Some(0)).expect("frames");
    assert_eq!(first[7], frame(16, 8));
    let d = store.plan(id).expect("detail");
    assert_eq!(d.iterations.len(), 2);
    assert_eq!(d.iterations[0].findings[0].text, "block vanishes");
    assert_eq!(d.summary.critic_verdict, Some(Verdict::Accept));
    assert_eq!(recovery_files(dir.path()), 1 + 7 + 7);
    // Same pixels twice are stored once.
    let other = store.add_plan(&new_plan("push", 3)).expect("add");
    store
        .add_iteration(other, &iteration(10, Verdict::Reject))
        .expect("same frames");
    assert_eq!(recovery_files(dir.path()), 1 + 7 + 7);
    store
        .add_execution(
            id,
            &NewExecution {
                iteration: Some(1),
                success: true,
                steps: 42,
                details: serde_json::json!({"replans": 1}),
            },
        )
        .expect("exec");
    assert_eq!(
        store.plan(id).expect("detail").executions[0]
            .execution
            .steps,
        42
    );
    assert!(matches!(
        store.add_iteration(PlanId(999), &iteration(1, Verdict::Accept)),
        Err(StoreError::NotFound { .. })
    ));
}

fn recovery_files(root: &Path) -> usize {
    let mut n = 0;
    for shard in std::fs::read_dir(root.join("frames"))
        .expect("ls")
        .flatten()
    {
        n += std::fs::read_dir(shard.path()).expect("ls").count();
    }
    n
}

#[test]
fn annotate_undo_redo_walk_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let p = store.add_plan(&new_plan("push", 1)).expect("add");
    let first = accept();
    let second = Annotation {
        verdict: Some(Verdict::Reject),
        rating: Some(2),
        ..Annotation::default()
    };
    assert!(store.annotate(p, &first, "ann").expect("a1").is_some());
    assert!(
        store.annotate(p, &first, "ann").expect("same").is_none(),
        "no-op not logged"
    );
    store.annotate(p, &second, "ann").expect("a2");
    store.annotate(p, &accept(), "bob").expect("bob");
    let now = |s: &Store| s.annotation(p, "ann").expect("get").map(|a| a.annotation);

    let r = store.undo("ann").expect("undo").expect("something to undo");
    assert_eq!(r.plan, p);
    assert_eq!(now(&store), Some(first.clone()));
    store.undo("ann").expect("undo").expect("again");
    assert_eq!(now(&store), None);
    assert!(store.undo("ann").expect("undo").is_none(), "stack empty");
    // Bob's label is untouched by ann's undo.
    assert!(store.annotation(p, "bob").expect("bob").is_some());

    store.redo("ann").expect("redo").expect("redo 1");
    assert_eq!(now(&store), Some(first.clone()));
    store.redo("ann").expect("redo").expect("redo 2");
    assert_eq!(now(&store), Some(second.clone()));
    assert!(store.redo("ann").expect("redo").is_none());

    // A new edit after an undo drops the redo branch.
    store.undo("ann").expect("undo");
    store.curate(p, true, "ann").expect("curate");
    assert!(store.redo("ann").expect("redo").is_none());
    assert_eq!(store.curated().expect("curated").len(), 1);
    store.undo("ann").expect("undo curate");
    assert!(store.curated().expect("curated").is_empty());
    assert_eq!(now(&store), Some(first.clone()));

    let log = store.audit_log(Some(p)).expect("log");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "edit", "edit", "edit", "undo", "undo", "redo", "redo", "undo", "edit", "undo"
        ]
    );
    let second_edit = &log[1];
    assert_eq!(second_edit.actor, "ann");
    assert_eq!(
        second_edit.before,
        Some(serde_json::to_value(&first).expect("json"))
    );
    assert_eq!(
        second_edit.after,
        Some(serde_json::to_value(&second).expect("json"))
    );
    assert!(log.iter().all(|e| e.at_ms > 0));
}

#[test]
fn invalid_labels_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let p = store.add_plan(&new_plan("push", 1)).expect("add");
    let bad = Annotation {
        rating: Some(6),
        ..Annotation::default()
    };
    assert!(matches!(
        store.annotate(p, &bad, "ann"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.annotate(PlanId(77), &accept(), "ann"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.prefer(p, p, Some(Preference::AOverB), "ann").is_err());
    assert!(store.audit_log(None).expect("log").is_empty());
}

#[test]
fn preferences_are_labels_with_undo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.add_plan(&new_plan("push", 1)).expect("a");
    let b = store.add_plan(&new_plan("push", 2)).expect("b");
    store
        .prefer(a, b, Some(Preference::AOverB), "ann")
        .expect("pref");
    store
        .prefer(a, b, Some(Preference::BothBad), "ann")
        .expect("pref");
    assert_eq!(
        store.preferences().expect("prefs")[0].choice,
        Preference::BothBad
    );
    store.undo("ann").expect("undo");
    assert_eq!(
        store.preferences().expect("prefs")[0].choice,
        Preference::AOverB
    );
    store.undo("ann").expect("undo");
    assert!(store.preferences().expect("prefs").is_empty());
}

#[test]
fn filters_and_review_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ids: Vec<PlanId> = (0..6)
        .map(|i| {
            let task = if i % 2 == 0 { "push" } else { "door-open" };
            store.add_plan(&new_plan(task, i)).expect("add")
        })
        .collect();
    store.annotate(ids[0], &accept(), "ann").expect("a");
    let reject = Annotation {
        verdict: Some(Verdict::Reject),
        tags: vec!["ghosting".into()],
        ..Annotation::default()
    };
    store.annotate(ids[1], &reject, "ann").expect("r");
    store.annotate(ids[2], &accept(), "bob").expect("bob");
    store.curate(ids[0], true, "ann").expect("curate");

    let next = store
        .next_unlabeled("ann", &Filter::default())
        .expect("next")
        .expect("some");
    assert_eq!(next.id, ids[2], "bob's label does not count for ann");
    let next = store
        .next_unlabeled(
            "ann",
            &Filter {
                after: Some(ids[2]),
                task: Some("push".into()),
                ..Filter::default()
            },
        )
        .expect("next")
        .expect("some");
    assert_eq!(next.id, ids[4]);

    let pushes = store
        .plans(&Filter {
            task: Some("push".into()),
            ..Filter::default()
        })
        .expect("plans");
    assert_eq!(pushes.len(), 3);
    let accepted = store
        .plans(&Filter {
            label: LabelFilter::Accepted,
            ..Filter::default()
        })
        .expect("plans");
    assert_eq!(
        accepted.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    let tagged = store
        .plans(&Filter {
            tag: Some("ghosting".into()),
            ..Filter::default()
        })
        .expect("plans");
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].rejects, 1);
    let curated = store.curated().expect("curated");
    assert_eq!(curated.len(), 1);
    assert!(curated[0].curated);
    assert_eq!(curated[0].mean_rating, Some(4.0));
    let not_curated = store
        .plans(&Filter {
            curated: Some(false),
            limit: Some(2),
            ..Filter::default()
        })
        .expect("plans");
    assert_eq!(not_curated.len(), 2);
}

#[test]
fn recovery_restores_reports_and_cleans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, it_hash, start_hash) = {
        let store = open(dir.path());
        let p = store.add_plan(&new_plan("push", 1)).expect("add");
        store
            .add_iteration(p, &iteration(5, Verdict::Accept))
            .expect("it");
        let d = store.plan(p).expect("detail");
        (p, d.iterations[0].frames[0].clone(), d.start_frame)
    };
    let root = dir.path();
    // A crash left: a temp file, an orphan frame, a deleted frame, a corrupted frame.
    let shard = root.join("frames").join("00");
    std::fs::create_dir_all(&shard).expect("mkdir");
    std::fs::write(shard.join(".x.png.123.0.tmp"), b"half").expect("tmp");
    let orphan = frames::encode(&frame(200, 8)).expect("enc");
    frames::write_frame(root, &orphan).expect("orphan");
    let lost = root.join("lost+found");
    std::fs::create_dir_all(&lost).expect("mkdir");
    std::fs::rename(
        frames::frame_path(root, &start_hash),
        lost.join(format!("{start_hash}.png")),
    )
    .expect("move start frame away");
    std::fs::write(frames::frame_path(root, &it_hash), b"garbage").expect("corrupt");

    let (store, report) = Store::open(root).expect("open");
    assert_eq!(report.temp_files_removed.len(), 1, "{report}");
    assert_eq!(report.orphan_files_removed.len(), 1, "{report}");
    assert_eq!(report.restored_frames, vec![start_hash.clone()]);
    assert_eq!(report.corrupt_frames, vec![it_hash.clone()]);
    assert_eq!(report.missing_frames, vec![it_hash.clone()]);
    assert!(report.has_unrepaired());
    assert!(
        report.to_string().contains("1 missing frame file"),
        "{report}"
    );
    // Nothing was dropped: the plan and its iteration are still there.
    let d = store.plan(p).expect("detail");
    assert_eq!(d.iterations[0].frames[0], it_hash);
    assert!(store.load_frames(p, Some(0)).is_err());
    assert!(matches!(
        store.load_frames(p, None),
        Err(StoreError::MissingFrame { .. })
    ));
    assert!(!frames::frame_path(root, &orphan.hash).exists());
    let flagged: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM frames WHERE missing = 1", [], |r| {
            r.get(0)
        })
        .expect("q");
    assert_eq!(flagged, 1);
    // The corrupt file was kept in lost+found.
    assert!(
        std::fs::read_dir(&lost)
            .expect("ls")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"))
    );
    // Re-adding the same frame heals the record.
    store
        .add_iteration(p, &iteration(5, Verdict::Accept))
        .expect("again");
    let report = store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    assert_eq!(store.load_frames(p, Some(0)).expect("frames").len(), 8);
}

#[test]
fn concurrent_writers_on_separate_connections_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = {
        let store = open(dir.path());
        (0..4)
            .map(|i| store.add_plan(&new_plan("push", i)).expect("add"))
            .collect::<Vec<_>>()
    };
    let threads = 6;
    let per_thread = 40;
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let root = dir.path().to_owned();
            let base = base.clone();
            s.spawn(move || {
                let (store, _) = Store::open(&root).expect("open in thread");
                let me = format!("annotator-{t}");
                for i in 0..per_thread {
                    let plan = base[i % base.len()];
                    let ann = Annotation {
                        verdict: Some(if i % 2 == 0 {
                            Verdict::Accept
                        } else {
                            Verdict::Reject
                        }),
                        rating: Some((i % 5) as u8 + 1),
                        note: format!("{me} {i}"),
                        ..Annotation::default()
                    };
                    store.annotate(plan, &ann, &me).expect("annotate");
                    if i % 10 == 0 {
                        let p = store
                            .add_plan(&new_plan("door-open", (t * 50 + i) as u8))
                            .expect("add plan");
                        store
                            .add_iteration(p, &iteration(t as u8, Verdict::Reject))
                            .expect("iteration");
                        store.curate(p, true, &me).expect("curate");
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let (store, report) = Store::open(dir.path()).expect("reopen");
    assert!(report.is_clean(), "{report}");
    let log = store.audit_log(None).expect("log");
    let edits = log.iter().filter(|e| e.action == "edit").count();
    let expected_curations = threads * per_thread.div_ceil(10);
    assert_eq!(edits, threads * per_thread + expected_curations);
    for t in 0..threads {
        let me = format!("annotator-{t}");
        for (k, plan) in base.iter().enumerate() {
            let last_i = (0..per_thread)
                .filter(|i| i % base.len() == k)
                .max()
                .expect("i");
            let got = store.annotation(*plan, &me).expect("get").expect("label");
            assert_eq!(got.annotation.note, format!("{me} {last_i}"));
        }
    }
    assert_eq!(store.curated().expect("curated").len(), expected_curations);
    eprintln!(
        "{} writes from {threads} threads in {:.2} s",
        log.len(),
        elapsed.as_secs_f64()
    );
}

#[test]
fn one_store_shared_by_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(dir.path()));
    let p = store.add_plan(&new_plan("push", 1)).expect("add");
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = std::sync::Arc::clone(&store);
            s.spawn(move || {
                for i in 0..10u8 {
                    let ann = Annotation {
                        rating: Some(i % 5 + 1),
                        ..Annotation::default()
                    };
                    store.annotate(p, &ann, &format!("t{t}")).expect("annotate");
                }
            });
        }
    });
    assert_eq!(store.plan(p).expect("detail").annotations.len(), 4);
    assert_eq!(store.audit_log(None).expect("log").len(), 40);
}

#[test]
fn a_damaged_index_is_found_and_rebuilt_without_losing_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for i in 0..20 {
            store.add_plan(&new_plan("push", i)).expect("add");
        }
    }
    {
        // Point the index's definition at other columns without rebuilding it: its entries no
        // longer match the table, as after a torn write of an index page.
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("raw");
        conn.execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = 'CREATE INDEX plans_task ON plans(instruction, env_seed)'
                 WHERE name = 'plans_task';
             PRAGMA writable_schema = OFF;",
        )
        .expect("damage");
    }
    let (store, report) = Store::open(dir.path()).expect("open");
    assert!(!report.integrity_problems.is_empty(), "{report}");
    assert!(report.integrity_repaired, "{report}");
    assert!(!report.has_unrepaired());
    assert!(
        report.to_string().contains("repaired by REINDEX"),
        "{report}"
    );
    assert_eq!(store.plans(&Filter::default()).expect("plans").len(), 20);
    assert!(store.check().expect("check").integrity_problems.is_empty());
}

#[test]
fn undo_survives_closing_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = {
        let store = open(dir.path());
        let p = store.add_plan(&new_plan("push", 1)).expect("add");
        store.annotate(p, &accept(), "ann").expect("label");
        store.curate(p, true, "ann").expect("curate");
        p
    };
    let store = open(dir.path());
    let r = store.undo("ann").expect("undo").expect("the curation");
    assert_eq!(r.kind, ChangeKind::Curation);
    assert!(store.curated().expect("curated").is_empty());
    store.undo("ann").expect("undo").expect("the label");
    assert!(store.annotation(p, "ann").expect("get").is_none());
    drop(store);
    let store = open(dir.path());
    store.redo("ann").expect("redo").expect("the label again");
    assert_eq!(
        store
            .annotation(p, "ann")
            .expect("get")
            .map(|a| a.annotation),
        Some(accept())
    );
}
