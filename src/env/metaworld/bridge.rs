//! The client of the MetaWorld bridge: a Python child process speaking JSON lines
//! (`python/metaworld_bridge.py`, protocol in docs/METAWORLD.md).
//!
//! A [`Bridge`] owns its child: it checks the protocol version at start-up, bounds every
//! request by a timeout (a reader thread parses replies and hands them over a channel, so
//! a hung simulator cannot hang the caller), and kills and reaps the process when dropped,
//! so no zombie outlives it. Any failure that leaves the stream in an unknown state
//! (timeout, crash, garbage) is [`BridgeError::is_fatal`]: the owner must drop the bridge
//! and start a new one. This module knows nothing about worlds or tasks.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

/// The protocol version this client speaks; the bridge reports its own in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The bridge program, compiled into the binary so that client and bridge always match.
pub const EMBEDDED_SCRIPT: &str = include_str!("../../../python/metaworld_bridge.py");

/// A header line longer than this is garbage, not a reply.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// A reply's payloads larger than this are garbage (1024 px RGB + depth + labels is 8 MiB).
const MAX_PAYLOAD_BYTES: usize = 64 << 20;
/// Lines of the child's stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// Which program the interpreter runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Script {
    /// [`EMBEDDED_SCRIPT`], passed with `python -c`.
    Embedded,
    /// A script file (tests use a fake world that speaks the same protocol).
    File(PathBuf),
}

/// How to start a bridge.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub python: PathBuf,
    pub script: Script,
    /// Bound on the `hello` handshake (interpreter start + imports).
    pub startup_timeout: Duration,
    /// Bound on every other request.
    pub request_timeout: Duration,
    /// Extra environment variables for the child.
    pub env: Vec<(OsString, OsString)>,
    /// The command that installs what is missing, quoted in errors.
    pub install_hint: String,
}

/// Errors of the bridge. Messages say what to do where something is missing.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no Python interpreter at {}: run `{install}`", python.display())]
    PythonMissing { python: PathBuf, install: String },
    #[error("cannot start {}: {source}", python.display())]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("the bridge's Python lacks packages ({detail}): run `{install}`")]
    PackagesMissing { detail: String, install: String },
    #[error("the bridge speaks protocol {found}, this build speaks {expected}")]
    VersionMismatch { expected: u32, found: u32 },
    #[error("the bridge did not answer '{op}' within {:.1} s", timeout.as_secs_f64())]
    Timeout { op: String, timeout: Duration },
    #[error("the bridge exited during '{op}' ({status}){stderr}")]
    Crashed {
        op: String,
        status: String,
        stderr: String,
    },
    #[error("the bridge broke the protocol during '{op}': {detail}")]
    Protocol { op: String, detail: String },
    #[error("the bridge refused '{op}' ({kind}): {message}")]
    Remote {
        op: String,
        kind: String,
        message: String,
    },
}

impl BridgeError {
    /// The process is gone or its stream is out of step: it must not be used again.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Remote { .. })
    }
}

/// One array of a reply, as raw little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    pub name: String,
    /// NumPy's name without byte order: `u1`, `f4`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// A successful reply: the header's fields (without `id`, `ok`, `payloads`) and the arrays.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub fields: Map<String, Value>,
    pub payloads: Vec<Payload>,
}

impl Reply {
    /// The header's fields as a typed value.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, op: &str) -> Result<T, BridgeError> {
        serde_json::from_value(Value::Object(self.fields.clone())).map_err(|e| {
            BridgeError::Protocol {
                op: op.to_owned(),
                detail: format!("unexpected reply fields: {e}"),
            }
        })
    }

    pub fn payload(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.name == name)
    }
}

/// What the bridge says about itself in the handshake.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    pub bridge: String,
    #[serde(default)]
    pub python: Option<String>,
    #[serde(default)]
    pub metaworld: Option<String>,
    #[serde(default)]
    pub mujoco: Option<String>,
    #[serde(default)]
    pub gl: Option<String>,
    /// Why the simulator could not be imported, if it could not.
    #[serde(default)]
    pub import_error: Option<String>,
}

#[derive(Deserialize)]
struct PayloadSpec {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    bytes: usize,
}

#[derive(Deserialize)]
struct RemoteError {
    kind: String,
    message: String,
}

#[derive(Deserialize)]
struct Header {
    id: Option<u64>,
    ok: bool,
    #[serde(default)]
    error: Option<RemoteError>,
    #[serde(default)]
    payloads: Vec<PayloadSpec>,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

/// What the reader thread hands over.
enum Incoming {
    Reply {
        id: Option<u64>,
        result: Result<Reply, RemoteError>,
    },
    /// Stdout closed: the process exited.
    Closed,
    Garbage(String),
}

/// A running bridge process; see the module docs.
pub struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    incoming: Receiver<Incoming>,
    threads: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
    request_timeout: Duration,
    /// False once a fatal error happened: the stream can no longer be trusted.
    healthy: bool,
    hello: Hello,
}

impl Bridge {
    /// Starts the process and checks its protocol version and packages.
    pub fn start(config: &BridgeConfig) -> Result<Self, BridgeError> {
        let mut command = Command::new(&config.python);
        match &config.script {
            Script::Embedded => command.arg("-c").arg(EMBEDDED_SCRIPT),
            Script::File(path) => command.arg(path),
        };
        command
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BridgeError::PythonMissing {
                    python: config.python.clone(),
                    install: config.install_hint.clone(),
                }
            } else {
                BridgeError::Spawn {
                    python: config.python.clone(),
                    source,
                }
            }
        })?;
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => unreachable!("all three streams were configured as pipes"),
            };
        // Capacity 1: the reader stays at most one reply ahead, and the request protocol
        // never has more than one reply outstanding.
        let (tx, incoming) = sync_channel(1);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let threads = vec![
            std::thread::spawn(move || read_replies(stdout, &tx)),
            spawn_stderr_tail(stderr, Arc::clone(&tail)),
        ];
        let mut bridge = Self {
            child,
            stdin: Some(stdin),
            incoming,
            threads,
            stderr: tail,
            next_id: 0,
            request_timeout: config.request_timeout,
            healthy: true,
            hello: Hello::default(),
        };
        let reply = bridge.request_within(
            "hello",
            serde_json::json!({ "protocol": PROTOCOL_VERSION }),
            config.startup_timeout,
        )?;
        let hello: Hello = reply.parse("hello")?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(BridgeError::VersionMismatch {
                expected: PROTOCOL_VERSION,
                found: hello.protocol,
            });
        }
        if let Some(detail) = hello.import_error.clone() {
            return Err(BridgeError::PackagesMissing {
                detail,
                install: config.install_hint.clone(),
            });
        }
        bridge.hello = hello;
        Ok(bridge)
    }

    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The child's process id (tests check that it is reaped).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `{"op": op, ...fields}` and waits for the reply within the request timeout.
    pub fn request(&mut self, op: &str, fields: Value) -> Result<Reply, BridgeError> {
        self.request_within(op, fields, self.request_timeout)
    }

    fn request_within(
        &mut self,
        op: &str,
        fields: Value,
        timeout: Duration,
    ) -> Result<Reply, BridgeError> {
        let result = self.exchange(op, fields, timeout);
        if let Err(e) = &result
            && e.is_fatal()
        {
            self.healthy = false;
        }
        result
    }

    fn exchange(
        &mut self,
        op: &str,
        fields: Value,
        timeout: Duration,
    ) -> Result<Reply, BridgeError> {
        if !self.healthy {
            return Err(self.crashed(op));
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut message = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        message.insert("op".to_owned(), Value::from(op));
        message.insert("id".to_owned(), Value::from(id));
        let mut line = Value::Object(message).to_string();
        line.push('\n');
        let sent = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(line.as_bytes()).and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.crashed(op));
        }
        let deadline = Instant::now() + timeout;
        match self
            .incoming
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Incoming::Reply { id: got, result }) => {
                if got != Some(id) {
                    return Err(BridgeError::Protocol {
                        op: op.to_owned(),
                        detail: format!("reply to request {got:?}, expected {id}"),
                    });
                }
                result.map_err(|e| BridgeError::Remote {
                    op: op.to_owned(),
                    kind: e.kind,
                    message: e.message,
                })
            }
            Ok(Incoming::Garbage(detail)) => Err(BridgeError::Protocol {
                op: op.to_owned(),
                detail,
            }),
            Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => Err(self.crashed(op)),
            Err(RecvTimeoutError::Timeout) => Err(BridgeError::Timeout {
                op: op.to_owned(),
                timeout,
            }),
        }
    }

    /// The error for a process that went away: its exit status and last stderr lines.
    fn crashed(&mut self, op: &str) -> BridgeError {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => break "still running, not answering".to_owned(),
                Err(e) => break e.to_string(),
            }
        };
        let lines: Vec<String> = self
            .stderr
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let stderr = if lines.is_empty() {
            String::new()
        } else {
            format!("; its last stderr lines:\n{}", lines.join("\n"))
        };
        BridgeError::Crashed {
            op: op.to_owned(),
            status,
            stderr,
        }
    }
}

impl Drop for Bridge {
    /// Asks a healthy bridge to close (it releases its GL context), then kills and reaps
    /// the process whatever it did, and joins the reader threads (their pipes are closed
    /// once the process is gone).
    fn drop(&mut self) {
        if self.healthy {
            let _ = self.request_within("close", Value::Null, Duration::from_secs(2));
        }
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_millis(500);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Dropping the receiver unblocks a reader waiting to hand over a reply.
        let (_, unused) = sync_channel(0);
        drop(std::mem::replace(&mut self.incoming, unused));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The reader thread: header line, then the payload bytes it announces, per reply.
fn read_replies(stdout: std::process::ChildStdout, tx: &SyncSender<Incoming>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let incoming = read_one(&mut reader);
        let last = !matches!(incoming, Incoming::Reply { .. });
        if tx.send(incoming).is_err() || last {
            return;
        }
    }
}

fn read_one(reader: &mut BufReader<std::process::ChildStdout>) -> Incoming {
    let mut line = Vec::new();
    match reader
        .by_ref()
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
    {
        Ok(0) | Err(_) => return Incoming::Closed,
        Ok(_) => {}
    }
    if line.last() != Some(&b'\n') {
        // Either the process died halfway through a line, or the line never ends.
        return if (line.len() as u64) < MAX_HEADER_BYTES {
            Incoming::Closed
        } else {
            Incoming::Garbage(format!(
                "a header line longer than {MAX_HEADER_BYTES} bytes"
            ))
        };
    }
    let header: Header = match serde_json::from_slice(&line) {
        Ok(h) => h,
        Err(e) => {
            let text = String::from_utf8_lossy(&line);
            let shown: String = text.trim_end().chars().take(120).collect();
            return Incoming::Garbage(format!("not a reply header ({e}): {shown:?}"));
        }
    };
    let total: usize = header.payloads.iter().map(|p| p.bytes).sum();
    if total > MAX_PAYLOAD_BYTES {
        return Incoming::Garbage(format!("{total} payload bytes announced"));
    }
    let mut payloads = Vec::with_capacity(header.payloads.len());
    for spec in header.payloads {
        let mut bytes = vec![0; spec.bytes];
        if reader.read_exact(&mut bytes).is_err() {
            return Incoming::Closed;
        }
        payloads.push(Payload {
            name: spec.name,
            dtype: spec.dtype,
            shape: spec.shape,
            bytes,
        });
    }
    let result = match (header.ok, header.error) {
        (true, _) => Ok(Reply {
            fields: header.fields,
            payloads,
        }),
        (false, Some(e)) => Err(e),
        (false, None) => Err(RemoteError {
            kind: "unknown".to_owned(),
            message: "an error reply without an error".to_owned(),
        }),
    };
    Incoming::Reply {
        id: header.id,
        result,
    }
}

/// Keeps the last lines of the child's stderr (for crash reports) and logs them at debug.
fn spawn_stderr_tail(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            tracing::debug!(target: "videoagent::metaworld_bridge", "{line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}
