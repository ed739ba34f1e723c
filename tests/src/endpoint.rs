//! A scripted HTTP endpoint on loopback: answers each request with the next
//! scripted response and records what it received. Plain `std::net`, so a
//! test controls exactly the status, headers and body of every answer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonde_core::ReportBatch;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

impl Reply {
    /// `status` with an empty JSON body.
    pub fn status(status: u16) -> Reply {
        Reply::ok("{}").with_status(status)
    }

    /// 200 with `body`.
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            content_type: "application/json",
        }
    }

    /// 200 with a protobuf `body` (an OTLP response).
    pub fn protobuf(body: Vec<u8>) -> Reply {
        Reply { status: 200, headers: vec![], body, content_type: "application/x-protobuf" }
    }

    /// With another status.
    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived (relative to the endpoint's start).
    pub at: Duration,
    /// The decoded batch (empty when the body is not sonde JSON, e.g. OTLP).
    pub batch: ReportBatch,
    /// The body after gzip decoding.
    pub body: Vec<u8>,
    /// The body exactly as it came over the wire (gzip when `encoding` says).
    pub raw: Vec<u8>,
    /// Its `Content-Encoding`.
    pub encoding: Option<String>,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default, Debug)]
struct Shared {
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    received: Vec<Received>,
}

/// The endpoint; stops accepting when dropped (the thread ends with the test).
#[derive(Debug)]
pub struct ScriptedEndpoint {
    /// `http://127.0.0.1:PORT/v1/reports`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl ScriptedEndpoint {
    /// Starts an endpoint answering `script` in order, then `fallback`
    /// forever (200 `{}` when `None`).
    pub fn start(script: Vec<Reply>, fallback: Option<Reply>) -> ScriptedEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/reports", listener.local_addr().unwrap());
        let shared =
            Arc::new(Mutex::new(Shared { script: script.into(), fallback, received: vec![] }));
        crate::accept_forever(listener, shared.clone(), serve);
        ScriptedEndpoint { url, shared }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests arrived or `timeout` passes; returns them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the rest of the script and the fallback.
    pub fn rescript(&self, script: Vec<Reply>, fallback: Option<Reply>) {
        let mut s = self.shared.lock().unwrap();
        s.script = script.into();
        s.fallback = fallback;
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>, start: Instant) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let encoding = header("content-encoding");
        let content_type = header("content-type");
        let authorization = header("authorization");
        let raw = body.clone();
        let body = if encoding.as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut out).unwrap();
            out
        } else {
            body
        };
        let reply = {
            let mut s = shared.lock().unwrap();
            let batch = if content_type.as_deref() == Some("application/json") {
                serde_json::from_slice(&body).expect("a report batch")
            } else {
                ReportBatch { reports: vec![] }
            };
            let at = start.elapsed();
            s.received.push(Received {
                at,
                batch,
                body,
                raw,
                encoding,
                content_type,
                authorization,
            });
            let fallback = s.fallback.clone().unwrap_or_else(|| Reply::ok("{}"));
            s.script.pop_front().unwrap_or(fallback)
        };
        let mut text = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
            reply.status,
            reply.content_type,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&reply.body);
        if out.write_all(&bytes).is_err() {
            return;
        }
    }
}
