//! A minimal blocking client for OpenAI-compatible chat completions (OpenAI, vLLM, Ollama,
//! llama.cpp server): one POST to `{base}/chat/completions`, a global timeout per attempt,
//! bounded retries with exponential backoff on network errors, 429 and 5xx (honouring a short
//! `Retry-After`), and every other problem (non-JSON, no choices, a refusal, an empty answer)
//! turned into a one-line reason. The API key is sent as a bearer token and never logged,
//! printed or saved; `Debug` hides it.

use std::time::Duration;

use serde_json::Value;

use super::CriticError;

/// Largest answer body read, bytes.
const MAX_BODY: u64 = 4 << 20;
/// Longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Where and how to reach the chat API.
#[derive(Clone)]
pub struct ChatSettings {
    /// e.g. `http://localhost:8000/v1` (the path up to, not including, `/chat/completions`).
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// Limit of one attempt, connection to last byte.
    pub timeout: Duration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
}

impl std::fmt::Debug for ChatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

pub const BASE_URL_VAR: &str = "OPENAI_BASE_URL";
pub const API_KEY_VAR: &str = "OPENAI_API_KEY";

impl ChatSettings {
    /// Settings for `model` at `base_url`, else `$OPENAI_BASE_URL`; the key from
    /// `$OPENAI_API_KEY` (may be absent: local servers need none).
    pub fn from_env(base_url: Option<&str>, model: &str) -> Result<Self, CriticError> {
        let base = base_url
            .map(str::to_owned)
            .or_else(|| std::env::var(BASE_URL_VAR).ok())
            .filter(|s| !s.trim().is_empty())
            .ok_or(CriticError::MissingEndpoint { var: BASE_URL_VAR })?;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CriticError::BadSetting(format!(
                "the API base URL must start with http:// or https:// (got '{base}')"
            )));
        }
        if model.trim().is_empty() {
            return Err(CriticError::BadSetting("the model name is empty".into()));
        }
        Ok(Self {
            base_url: base.trim_end_matches('/').to_owned(),
            api_key: std::env::var(API_KEY_VAR).ok().filter(|k| !k.is_empty()),
            model: model.to_owned(),
            timeout: Duration::from_secs(60),
            max_retries: 2,
            backoff: Duration::from_millis(500),
        })
    }
}

/// The chat client; see the module docs.
pub struct ChatClient {
    settings: ChatSettings,
    agent: ureq::Agent,
}

enum Attempt {
    Done(String),
    /// Worth another try, after at least this long.
    Retry(String, Option<Duration>),
    Fail(String),
}

impl ChatClient {
    pub fn new(settings: ChatSettings) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_redirects(2)
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            settings,
        }
    }

    pub fn settings(&self) -> &ChatSettings {
        &self.settings
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.settings.base_url)
    }

    /// Sends `messages` and returns the first choice's text, or why there is none.
    pub fn complete(&self, messages: Value, max_tokens: u32) -> Result<String, String> {
        let body = serde_json::json!({
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        });
        let mut wait = self.settings.backoff;
        let mut last = String::new();
        for attempt in 0..=self.settings.max_retries {
            match self.attempt(&body) {
                Attempt::Done(text) => return Ok(text),
                Attempt::Fail(reason) => return Err(reason),
                Attempt::Retry(reason, after) => {
                    tracing::debug!("chat attempt {} failed: {reason}", attempt + 1);
                    last = reason;
                    if attempt < self.settings.max_retries {
                        std::thread::sleep(after.unwrap_or(wait).min(MAX_RETRY_AFTER));
                        wait *= 2;
                    }
                }
            }
        }
        Err(format!(
            "{last} (after {} attempts)",
            self.settings.max_retries + 1
        ))
    }

    fn attempt(&self, body: &Value) -> Attempt {
        let mut req = self.agent.post(self.url());
        if let Some(key) = &self.settings.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = match req.send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                return Attempt::Retry(
                    format!(
                        "no answer from {} within {:.0} s",
                        self.url(),
                        self.settings.timeout.as_secs_f64()
                    ),
                    None,
                );
            }
            Err(e) => return Attempt::Retry(format!("cannot reach {}: {e}", self.url()), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = match resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
        {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => {
                return Attempt::Retry("the answer stalled past the timeout".into(), None);
            }
            Err(e) => return Attempt::Retry(format!("cannot read the answer: {e}"), None),
        };
        let snippet: String = text.chars().take(160).collect();
        match status {
            200..=299 => match reply_text(&text) {
                Ok(answer) => Attempt::Done(answer),
                Err(reason) => Attempt::Fail(reason),
            },
            429 => Attempt::Retry(format!("rate limited (429): {snippet}"), retry_after),
            500..=599 => Attempt::Retry(format!("server error {status}: {snippet}"), retry_after),
            _ => Attempt::Fail(format!("the server answered {status}: {snippet}")),
        }
    }
}

/// The answer text of a chat-completions response body (the first choice's content, trimmed),
/// or a one-line reason why there is none. Public because the body comes from a server the
/// user points us at: it is untrusted input, fuzzed in `tests/fuzz`.
pub fn reply_text(text: &str) -> Result<String, String> {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        let snippet: String = text.chars().take(80).collect();
        return Err(format!("the answer is not JSON: {snippet:?}"));
    };
    if let Some(err) = json.get("error").filter(|e| !e.is_null()) {
        let msg = err.get("message").and_then(Value::as_str).unwrap_or("?");
        return Err(format!("the server reported an error: {msg}"));
    }
    let Some(choice) = json
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err("the answer has no choices".into());
    };
    let message = choice.get("message");
    if let Some(refusal) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
    {
        return Err(format!("the model refused: {refusal}"));
    }
    let content = message.and_then(|m| m.get("content"));
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        return Err("the model gave an empty answer".into());
    }
    Ok(text.trim().to_owned())
}
