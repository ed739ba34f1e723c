//! A misbehaving HTTP endpoint on loopback, for the fault suite and the
//! reliability runner: plain `std::net`, one request per connection, and a
//! [`Fault`] that can be switched while the host under test keeps sending.
//!
//! Every request it reads in full is counted, whatever it then does with it,
//! so a test can check the host's rate limits against what actually arrived.
//! A TLS `ClientHello` (an `https://` client talking to this plain-TCP server)
//! is counted too, and answered with plain text: a handshake failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// What the endpoint does with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `200 {"accepted": N}`: the reports are delivered.
    Healthy,
    /// This status with an empty JSON body, and `Retry-After` if given.
    Status(u16, Option<String>),
    /// Reads the request and never answers (until the client gives up).
    Hang,
    /// A valid `200` answer, one byte every 50 ms (over 20 s in all).
    Trickle,
    /// Bytes that are not HTTP, then the connection is closed.
    Garbage,
    /// A `200` whose body stops after 20 of its announced 1,000 bytes.
    Truncated,
    /// A well-formed `200` whose body is not JSON.
    GarbageBody,
    /// A `200` whose body is this many bytes: a valid `stop` directive
    /// padded with spaces. A host that read and parsed it all would stop.
    HugeBody(usize),
    /// `307` to this URL (a host must not follow it).
    Redirect(String),
    /// Closes the connection without a word.
    Close,
    /// Forwards the request to a collector at this address and relays its
    /// answer; with `hold`, the answer is withheld (the collector has stored
    /// the reports, the host never hears so) until the client goes away.
    Forward {
        /// The collector's address.
        to: SocketAddr,
        /// Withhold the answer.
        hold: bool,
    },
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it arrived, since the endpoint started.
    pub at: Duration,
    /// The fault it met.
    pub fault: Fault,
    /// A TLS handshake, not an HTTP request.
    pub tls: bool,
    /// The report ids in its body (empty if the body did not decode).
    pub report_ids: Vec<Uuid>,
    /// The reports in its body, decoded.
    pub reports: Vec<sonde_core::Report>,
    /// The body was not a gzip JSON batch.
    pub undecodable: bool,
}

#[derive(Debug)]
struct Shared {
    fault: Fault,
    attempts: Vec<Attempt>,
    held: usize,
    huge_bytes_written: Vec<usize>,
}

/// The endpoint; it serves until the process ends.
#[derive(Debug, Clone)]
pub struct FaultyEndpoint {
    /// `http://127.0.0.1:PORT/v1/reports`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl FaultyEndpoint {
    /// Starts on a free loopback port with `fault`.
    pub fn start(fault: Fault) -> FaultyEndpoint {
        FaultyEndpoint::start_on("127.0.0.1:0".parse().unwrap(), fault)
    }

    /// Starts on `addr` (e.g. a port that was down so far) with `fault`.
    pub fn start_on(addr: SocketAddr, fault: Fault) -> FaultyEndpoint {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            fault,
            attempts: vec![],
            held: 0,
            huge_bytes_written: vec![],
        }));
        crate::accept_forever(listener, shared.clone(), serve);
        FaultyEndpoint { url: format!("http://{addr}/v1/reports"), addr, shared }
    }

    /// Switches what the endpoint does from the next request on.
    pub fn set(&self, fault: Fault) {
        self.shared.lock().unwrap().fault = fault;
    }

    /// Every request (and TLS handshake) so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().unwrap().attempts.clone()
    }

    /// Report ids of the requests answered with a `200` (healthy, or with a
    /// garbage or huge body) or forwarded and answered, with repetitions.
    pub fn delivered(&self) -> Vec<Uuid> {
        self.attempts()
            .into_iter()
            .filter(|a| {
                matches!(
                    a.fault,
                    Fault::Healthy
                        | Fault::GarbageBody
                        | Fault::HugeBody(_)
                        | Fault::Forward { hold: false, .. }
                )
            })
            .flat_map(|a| a.report_ids)
            .collect()
    }

    /// The report `id` as last received, whatever the answer was.
    pub fn report(&self, id: Uuid) -> Option<sonde_core::Report> {
        self.attempts().into_iter().rev().flat_map(|a| a.reports).find(|r| r.report_id == id)
    }

    /// Requests whose answer is being withheld ([`Fault::Forward`] `hold`)
    /// after the collector took them.
    pub fn held(&self) -> usize {
        self.shared.lock().unwrap().held
    }

    /// For each [`Fault::HugeBody`] answer: the bytes written before the
    /// client stopped reading.
    pub fn huge_bytes_written(&self) -> Vec<usize> {
        self.shared.lock().unwrap().huge_bytes_written.clone()
    }

    /// Polls `done` every 20 ms until it holds or `timeout` passes.
    pub fn wait(&self, timeout: Duration, mut done: impl FnMut(&FaultyEndpoint) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A request read off a connection.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let mut request = Request { head, body: vec![] };
    let len: usize = request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len.min(32 << 20)];
    reader.read_exact(&mut body).ok()?;
    request.body = body;
    Some(request)
}

/// The reports in a gzip (or plain) JSON batch.
fn decode(request: &Request) -> Option<Vec<sonde_core::Report>> {
    let mut json = Vec::new();
    if request.header("content-encoding").as_deref() == Some("gzip") {
        flate2::read::GzDecoder::new(request.body.as_slice()).read_to_end(&mut json).ok()?;
    } else {
        json.clone_from(&request.body);
    }
    let batch: sonde_core::ReportBatch = serde_json::from_slice(&json).ok()?;
    Some(batch.reports)
}

fn answer(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn serve(mut stream: TcpStream, shared: &Mutex<Shared>, start: Instant) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut first = [0u8; 1];
    if stream.peek(&mut first).unwrap_or(0) == 0 {
        return;
    }
    if first[0] == 0x16 {
        // A TLS handshake record: count it, answer in plain text, close.
        let fault = shared.lock().unwrap().fault.clone();
        shared.lock().unwrap().attempts.push(Attempt {
            at: start.elapsed(),
            fault,
            tls: true,
            report_ids: vec![],
            reports: vec![],
            undecodable: true,
        });
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
        return;
    }
    let Some(request) = read_request(&stream) else { return };
    let reports = decode(&request);
    let count = reports.as_ref().map_or(0, Vec::len);
    let fault = {
        let mut s = shared.lock().unwrap();
        let fault = s.fault.clone();
        s.attempts.push(Attempt {
            at: start.elapsed(),
            fault: fault.clone(),
            tls: false,
            undecodable: reports.is_none(),
            report_ids: reports.iter().flatten().map(|r| r.report_id).collect(),
            reports: reports.unwrap_or_default(),
        });
        fault
    };
    match fault {
        Fault::Healthy => {
            let body = format!("{{\"accepted\":{count}}}");
            let _ = stream.write_all(&answer(200, &[], body.as_bytes()));
        }
        Fault::Status(code, retry) => {
            let headers: Vec<(&str, String)> =
                retry.into_iter().map(|r| ("retry-after", r)).collect();
            let _ = stream.write_all(&answer(code, &headers, b"{}"));
        }
        Fault::Hang => wait_for_close(&mut stream, Duration::from_secs(60)),
        Fault::Trickle => {
            let body = vec![b' '; 400];
            for byte in answer(200, &[], &body) {
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Fault::Garbage => {
            let _ = stream.write_all(b"\x00\xffSMTP ready? \x7f\x80\r\n\r\n\r\nnot http at all");
        }
        Fault::Truncated => {
            let mut bytes = answer(200, &[], &[b' '; 1000]);
            bytes.truncate(bytes.len() - 980);
            let _ = stream.write_all(&bytes);
        }
        Fault::GarbageBody => {
            let _ = stream.write_all(&answer(200, &[], b"<html>\x00\xff{\"directives\":[<oops"));
        }
        Fault::HugeBody(size) => {
            // Streamed from one small buffer: the endpoint itself stays
            // small, so the host's memory can be watched.
            let stop = br#"{"directives":[{"action":"stop","reason":"read a 10 MB body"}]}"#;
            let size = size.max(stop.len());
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\
                 connection: close\r\n\r\n"
            );
            let mut written = 0;
            let spaces = [b' '; 64 * 1024];
            let mut left = size - stop.len();
            let mut ok =
                stream.write_all(head.as_bytes()).is_ok() && stream.write_all(stop).is_ok();
            written += stop.len();
            while ok && left > 0 {
                let n = left.min(spaces.len());
                ok = stream.write_all(&spaces[..n]).is_ok();
                if ok {
                    written += n;
                    left -= n;
                }
            }
            shared.lock().unwrap().huge_bytes_written.push(written);
        }
        Fault::Redirect(to) => {
            let _ = stream.write_all(&answer(307, &[("location", to)], b"{}"));
        }
        Fault::Close => {}
        Fault::Forward { to, hold } => {
            let Some(reply) = forward(to, &request) else { return };
            if hold {
                shared.lock().unwrap().held += 1;
                wait_for_close(&mut stream, Duration::from_secs(120));
            } else {
                let _ = stream.write_all(&reply);
            }
        }
    }
}

/// Blocks until the peer closes the connection (or `max` passes).
fn wait_for_close(stream: &mut TcpStream, max: Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let until = Instant::now() + max;
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Sends `request` to `to` (HTTP/1.1, connection close) and returns the raw
/// answer.
fn forward(to: SocketAddr, request: &Request) -> Option<Vec<u8>> {
    let mut out = TcpStream::connect(to).ok()?;
    let encoding = request.header("content-encoding").unwrap_or_else(|| "identity".into());
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\n\
         content-encoding: {encoding}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    );
    out.write_all(head.as_bytes()).ok()?;
    out.write_all(&request.body).ok()?;
    let mut reply = Vec::new();
    out.read_to_end(&mut reply).ok()?;
    Some(reply)
}
