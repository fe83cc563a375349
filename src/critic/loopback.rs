//! Tests of the VLM critic against a real HTTP server on loopback that speaks the
//! chat-completions API, scripted per connection: good answers, slow ones, server errors,
//! rate limits, garbage, refusals, and a port nobody listens on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::{ChatClient, ChatSettings, Critic, CriticInput, Verdict, VlmCritic};
use crate::env::{Observation, open_world};
use crate::model::pipeline::resize;

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    delay: Duration,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(content: &str) -> Reply {
    answer(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}))
}

fn answer(body: Value) -> Reply {
    raw(200, &body.to_string())
}

fn raw(status: u16, body: &str) -> Reply {
    Reply {
        delay: Duration::ZERO,
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

/// A request as the server saw it.
struct Seen {
    head: String,
    body: Value,
}

/// Serves `replies` in order, one per connection (the last repeats), on a loopback port.
fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let Some(reply) = replies.get(n.min(replies.len().saturating_sub(1))).cloned() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                head,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            std::thread::sleep(reply.delay);
            let mut out = format!(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                reply.body.len()
            );
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&reply.body);
            let _ = stream.write_all(out.as_bytes());
        }
    });
    (url, seen)
}

fn settings(url: &str) -> ChatSettings {
    ChatSettings {
        base_url: url.to_owned(),
        api_key: Some("sk-test-secret".to_owned()),
        model: "judge-model".to_owned(),
        timeout: Duration::from_secs(5),
        max_retries: 2,
        backoff: Duration::from_millis(20),
    }
}

fn critic(settings: ChatSettings) -> VlmCritic {
    VlmCritic::new(ChatClient::new(settings), None)
}

fn start() -> (Observation, Vec<crate::env::Rgb8Image>) {
    let mut world = open_world("tabletop", 32).expect("world");
    let first = world.reset("push", 0, 5).expect("reset");
    let plan = vec![resize(&first.rgb, 16); 7];
    (first, plan)
}

fn review(critic: &VlmCritic) -> super::Review {
    let (first, plan) = start();
    critic.review(&CriticInput {
        first: &first,
        plan: &plan,
        task: "push",
        instruction: "push the block to the target",
    })
}

fn reason(r: &super::Review) -> String {
    match &r.verdict {
        Verdict::Unavailable { reason } => reason.clone(),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn accept_sends_the_frames_as_png_parts_with_the_key() {
    let (url, seen) = serve(vec![ok("Accept.")]);
    let r = review(&critic(settings(&url)));
    assert_eq!(r.verdict, Verdict::Accept);
    let seen = seen.lock().expect("log");
    assert_eq!(seen.len(), 1, "one judge call, no feedback call on accept");
    let req = &seen[0];
    assert!(
        req.head.starts_with("POST /v1/chat/completions"),
        "{}",
        req.head
    );
    assert!(
        req.head
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-test-secret")
    );
    assert_eq!(req.body["model"], "judge-model");
    let parts = req.body["messages"][1]["content"]
        .as_array()
        .expect("parts");
    assert_eq!(
        parts.len(),
        1 + 8,
        "the prompt, the start frame and 7 plan frames"
    );
    assert!(
        parts[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("push the block to the target"))
    );
    let url = parts[1]["image_url"]["url"].as_str().expect("image url");
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .expect("png data url");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let img = image::load_from_memory(&png).expect("a PNG");
    assert_eq!((img.width(), img.height()), (128, 128));
}

#[test]
fn reject_asks_for_feedback_and_clamps_it() {
    let long = "Inconsistent glitch. The block jumps without any force acting on it. Move the manipulator to the block first and then push it slowly to the green target.";
    let (url, seen) = serve(vec![ok("Reject"), ok(long)]);
    let feedback = ChatClient::new(ChatSettings {
        model: "feedback-model".to_owned(),
        ..settings(&url)
    });
    let r = review(&VlmCritic::new(
        ChatClient::new(settings(&url)),
        Some(feedback),
    ));
    assert_eq!(r.verdict, Verdict::Reject);
    assert!(
        r.feedback
            .starts_with("Inconsistent glitch. The block jumps")
    );
    assert!(r.feedback.split_whitespace().count() <= super::MAX_FEEDBACK_WORDS);
    let seen = seen.lock().expect("log");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["model"], "judge-model");
    assert_eq!(seen[1].body["model"], "feedback-model");
    let prompt = seen[1].body["messages"][1]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(prompt.contains("Examples"), "{prompt}");
}

#[test]
fn a_slow_server_times_out_instead_of_hanging() {
    let slow = Reply {
        delay: Duration::from_secs(3),
        ..ok("Accept")
    };
    let (url, _) = serve(vec![slow]);
    let s = ChatSettings {
        timeout: Duration::from_millis(300),
        max_retries: 1,
        ..settings(&url)
    };
    let t0 = Instant::now();
    let r = review(&critic(s));
    assert!(reason(&r).contains("within"), "{}", reason(&r));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn server_errors_and_rate_limits_are_retried() {
    let limited = Reply {
        headers: vec![("Retry-After", "0".to_owned())],
        ..raw(429, r#"{"error":{"message":"slow down"}}"#)
    };
    let (url, seen) = serve(vec![raw(503, "overloaded"), limited.clone(), ok("Accept")]);
    let r = review(&critic(settings(&url)));
    assert_eq!(r.verdict, Verdict::Accept);
    assert_eq!(seen.lock().expect("log").len(), 3);

    let (url, seen) = serve(vec![limited]);
    let r = review(&critic(settings(&url)));
    let why = reason(&r);
    assert!(
        why.contains("rate limited") && why.contains("3 attempts"),
        "{why}"
    );
    assert_eq!(seen.lock().expect("log").len(), 3, "bounded retries");
}

#[test]
fn bad_answers_make_the_critic_unavailable() {
    let cases = [
        (raw(200, "<html>not json</html>"), "not JSON"),
        (answer(json!({"choices": []})), "no choices"),
        (
            answer(
                json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}}]}),
            ),
            "refused",
        ),
        (ok("   "), "empty answer"),
        (ok("Maybe, hard to say."), "neither Accept nor Reject"),
        (raw(401, r#"{"error":{"message":"bad key"}}"#), "401"),
    ];
    for (reply, expected) in cases {
        let (url, seen) = serve(vec![reply]);
        let r = review(&critic(settings(&url)));
        let why = reason(&r);
        assert!(why.contains(expected), "{why} should mention {expected}");
        assert!(!why.contains("sk-test-secret"), "the key leaked: {why}");
        assert_eq!(
            seen.lock().expect("log").len(),
            1,
            "{expected}: not retried"
        );
    }
}

#[test]
fn a_dead_port_is_unavailable_and_feedback_failure_keeps_the_reject() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let s = ChatSettings {
        max_retries: 1,
        ..settings(&format!("http://127.0.0.1:{port}/v1"))
    };
    assert!(reason(&review(&critic(s))).contains("cannot reach"));

    let (url, _) = serve(vec![ok("Reject"), raw(400, "{}")]);
    let r = review(&critic(settings(&url)));
    assert_eq!(r.verdict, Verdict::Reject);
    assert!(!r.feedback.is_empty());
}

#[test]
fn settings_never_show_the_key() {
    let s = settings("http://127.0.0.1:1/v1");
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("sk-test-secret") && shown.contains("<set>"),
        "{shown}"
    );
    let err = ChatSettings::from_env(Some("ftp://x"), "m").expect_err("bad scheme");
    assert!(err.to_string().contains("http://"));
    let s = ChatSettings::from_env(Some("http://localhost:8000/v1/"), "m").expect("ok");
    assert_eq!(s.base_url, "http://localhost:8000/v1");
}
