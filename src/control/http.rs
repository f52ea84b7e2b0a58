//! HTTP and WebSocket control on one port.
//!
//! - `GET /params`: the current values (200, JSON).
//! - `POST /params` with a JSON object of some values: applied as one change; 200 with the new full set, or 400
//!   `{"error": "..."}` naming the bad key or value (nothing changes then); a body over 64 KiB is 413.
//! - `/ws`: a WebSocket. Each text message is a JSON object applied like `POST /params`, answered with
//!   `{"params": {...}}` or `{"error": "..."}`; once a second the server pushes `{"stats": {...}}` (the latest
//!   pipeline statistics, once there are any).
//!
//! With a token every request, the WebSocket upgrade included, must carry `Authorization: Bearer <token>`
//! (else 401). Every response is JSON and closes its connection.
//!
//! The server is plain threads over `std::net`: one accepts, one serves each connection (at most
//! [`MAX_CONNECTIONS`] at once, [`MAX_CONNECTIONS_PER_PEER`] from one address; more are answered 503). Requests
//! are parsed with `httparse`; WebSocket frames are `tungstenite`'s. Every read and write has a timeout, and the
//! accept thread is woken by a connection of the server's own, so dropping the [`HttpServer`] stops and joins all
//! of its threads within a fraction of a second.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::{ControlHub, Throttle};
use crate::config::values::{SHOWN_CHARS, preview};
use crate::error::{Error, Result, because};

/// The largest request body (and WebSocket message) taken.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest request head (request line and headers) taken.
pub const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once; more are answered 503.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections served at once from one peer address: one client that keeps opening connections gets 503 itself,
/// and the other half of the slots stays free for everyone else.
pub const MAX_CONNECTIONS_PER_PEER: usize = MAX_CONNECTIONS / 2;
/// How often blocked threads look whether the server is stopping.
const POLL: Duration = Duration::from_millis(100);
/// The time a client has to send a whole request.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// The time a write may block (a client that stops reading is dropped).
const WRITE_TIME: Duration = Duration::from_secs(2);
/// How often the WebSocket pushes statistics.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// A WebSocket is pinged this often; one that has sent nothing (not even the pong) for [`WS_SILENT`] is closed,
/// so vanished clients do not hold connection slots.
const PING_EVERY: Duration = Duration::from_secs(10);
const WS_SILENT: Duration = Duration::from_secs(30);

/// A running control server; dropping it stops it.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(accept) = self.accept.take() else { return };
        // The accept thread blocks in accept(): wake it with a connection of our own. Should that fail (it
        // cannot, short of a firewall on loopback), leave the thread rather than hang.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            Ok(_) => {
                let _ = accept.join();
            }
            Err(e) => tracing::warn!("control: could not wake the HTTP server at {wake} to stop it: {e}"),
        }
    }
}

struct Shared {
    hub: Arc<ControlHub>,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    /// The address bound (a `Host` naming it is this server).
    addr: SocketAddr,
    /// Refused requests are warned about at most once a second (a web page can send them by the thousand).
    refusals: Mutex<Throttle>,
}

/// Listen on `addr` (port 0: any free port) and serve `hub` until the returned server is dropped.
pub fn serve(hub: Arc<ControlHub>, addr: SocketAddr, token: Option<String>) -> Result<HttpServer> {
    let listen_error = |e: std::io::Error| listen_failed("http", addr, e);
    let listener = TcpListener::bind(addr).map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared =
        Arc::new(Shared { hub, token, stop: stop.clone(), addr, refusals: Mutex::new(Throttle::per_second()) });
    let accept = std::thread::Builder::new()
        .name("control http".into())
        .spawn(move || accept_loop(&listener, &shared))
        .map_err(|e| Error::internal("control HTTP thread", e))?;
    tracing::info!("control: HTTP and WebSocket on http://{addr} (GET/POST /params, /ws)");
    Ok(HttpServer { addr, stop, accept: Some(accept) })
}

/// A control server that cannot listen: the environment's failure (a port in use, an address not here).
pub(crate) fn listen_failed(scheme: &str, addr: SocketAddr, e: std::io::Error) -> Error {
    Error::Listen { address: format!("{scheme}://{addr}"), cause: because(e.to_string()) }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    // Each connection's thread with its peer's address.
    let mut connections: Vec<(std::net::IpAddr, JoinHandle<()>)> = Vec::new();
    // Connections past the limit get a 503 from threads of their own (at most as many again): answering from
    // here could block, and closing without reading the request would reset the connection before the client
    // reads the answer. Past that too, they are just closed.
    let mut refusals: Vec<JoinHandle<()>> = Vec::new();
    let mut busy = Throttle::per_second();
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                connections.retain(|(_, c)| !c.is_finished());
                refusals.retain(|c| !c.is_finished());
                let from_peer = connections.iter().filter(|(ip, _)| *ip == peer.ip()).count();
                let refusal = if from_peer >= MAX_CONNECTIONS_PER_PEER {
                    Some(format!("too many connections from {} (at most {MAX_CONNECTIONS_PER_PEER})", peer.ip()))
                } else if connections.len() >= MAX_CONNECTIONS {
                    Some(format!("too many connections (at most {MAX_CONNECTIONS})"))
                } else {
                    None
                };
                if refusal.is_some() && refusals.len() >= MAX_CONNECTIONS {
                    continue;
                }
                let shared = shared.clone();
                let refused = refusal.is_some();
                let name = if refused { "control refusal" } else { "control connection" };
                if let Some(why) = &refusal {
                    busy.warn(format_args!("control: {why}; refusing one from {peer}"));
                }
                let spawned = std::thread::Builder::new().name(name.into()).spawn(move || match refusal {
                    Some(why) => {
                        let mut stream = stream;
                        if prepare(&stream).is_ok() {
                            finish(&mut stream, 503, &json!({ "error": why }), &[], &shared.stop);
                        }
                    }
                    None => connection(stream, peer, &shared),
                });
                match spawned {
                    Ok(handle) if refused => refusals.push(handle),
                    Ok(handle) => connections.push((peer.ip(), handle)),
                    Err(e) => tracing::warn!("control: cannot start a connection thread: {e}"),
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: wait and go on.
                tracing::warn!("control: accepting a connection failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    for thread in connections.into_iter().map(|(_, c)| c).chain(refusals) {
        let _ = thread.join();
    }
}

fn prepare(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(WRITE_TIME))?;
    stream.set_nodelay(true)
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header lists `token` (case-insensitive).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .any(|(_, v)| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    }
}

/// Why a request could not be served, as the response that says so.
struct Reject {
    status: u16,
    message: String,
}

fn reject(status: u16, message: impl Into<String>) -> Reject {
    Reject { status, message: message.into() }
}

fn connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    if let Err(e) = prepare(&stream) {
        tracing::debug!(%peer, "control: connection setup failed: {e}");
        return;
    }
    let deadline = Instant::now() + REQUEST_TIME;
    let (head, rest) = match read_head(&mut stream, &shared.stop, deadline) {
        Ok(Some(read)) => read,
        Ok(None) => return,
        Err(r) => {
            finish(&mut stream, r.status, &json!({"error": r.message}), &[], &shared.stop);
            return;
        }
    };
    if let Some(r) = foreign(&head, shared) {
        shared.refusals.lock().unwrap_or_else(|p| p.into_inner()).warn(format_args!("control: {peer}: {}", r.message));
        finish(&mut stream, r.status, &json!({"error": r.message}), &[], &shared.stop);
        return;
    }
    if head.path == "/ws" && head.method == "GET" && authorized(&head, shared.token.as_deref()) {
        match upgrade(&mut stream, &head) {
            Ok(()) => {
                tracing::debug!(%peer, "control: WebSocket open");
                websocket(stream, rest, shared);
                tracing::debug!(%peer, "control: WebSocket closed");
            }
            Err(r) => {
                let extra: &[(&str, &str)] =
                    if r.status == 426 { &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")] } else { &[] };
                finish(&mut stream, r.status, &json!({"error": r.message}), extra, &shared.stop);
            }
        }
        return;
    }
    let (status, body, extra) = match route(&mut stream, &head, rest, shared, deadline) {
        Ok((status, body)) => (status, body, &[][..]),
        Err(r) => {
            let extra: &[(&str, &str)] = match r.status {
                401 => &[("WWW-Authenticate", "Bearer")],
                405 if head.path == "/ws" => &[("Allow", "GET")],
                405 => &[("Allow", "GET, POST")],
                _ => &[],
            };
            (r.status, json!({"error": r.message}), extra)
        }
    };
    let (method, path) = (preview(&head.method, SHOWN_CHARS), preview(&head.path, SHOWN_CHARS));
    tracing::debug!(%peer, method, path, status, "control request");
    finish(&mut stream, status, &body, extra, &shared.stop);
}

/// Read up to the end of the request head; the head and the bytes read after it. None: the client went away
/// (or the server is stopping) before sending a whole head.
fn read_head(
    stream: &mut TcpStream,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::result::Result<Option<(Head, Vec<u8>)>, Reject> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(reject(431, format!("request head over {MAX_HEAD} bytes")));
        }
        match read_some(stream, &mut chunk, stop, deadline) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(reject(400, "malformed HTTP request: incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(reject(431, "too many request headers")),
        Err(e) => return Err(reject(400, format!("malformed HTTP request: {e}"))),
    }
    let target = request.path.unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or(target).to_string();
    let head = Head {
        method: request.method.unwrap_or("").to_string(),
        path,
        headers: request
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
            .collect(),
    };
    Ok(Some((head, buf[end..].to_vec())))
}

/// One read that waits out the socket's poll timeouts until there is data, the peer closes (0), the deadline
/// passes or the server stops (TimedOut).
fn read_some(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool, deadline: Instant) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Without a token only this machine's own tools may drive the stream, not a web page the streamer happens to
/// have open: a page's request from another site carries its `Origin` (cross-site request forgery, a WebSocket
/// included), and a page that reaches this port through a re-bound DNS name carries that name in `Host`. Either
/// is refused with 403. Tools (curl, OSC bridges, scripts) send no `Origin` and a loopback `Host`. With a token,
/// the token decides (a page cannot know it).
fn foreign(head: &Head, shared: &Shared) -> Option<Reject> {
    if shared.token.is_some() {
        return None;
    }
    let hint = "set control.token to accept it";
    if let Some(host) = head.header("host")
        && !local_authority(host, shared.addr)
    {
        let host = preview(host, SHOWN_CHARS);
        return Some(reject(403, format!("Host `{host}` is not this machine's own address; {hint}")));
    }
    if let Some(origin) = head.header("origin") {
        let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
        if !authority.is_some_and(|a| local_authority(a, shared.addr)) {
            let origin = preview(origin, SHOWN_CHARS);
            return Some(reject(403, format!("a request from the web page `{origin}` is refused; {hint}")));
        }
    }
    None
}

/// Whether `authority` (`host[:port]`, `[v6][:port]`) names this machine: `localhost`, a loopback address or
/// the address bound.
fn local_authority(authority: &str, bound: SocketAddr) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip == bound.ip())
}

fn authorized(head: &Head, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = head.header("authorization") else { return false };
    let Some((scheme, credentials)) = value.split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer") && same(credentials.trim().as_bytes(), token.as_bytes())
}

/// Equal, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Serve a plain HTTP request: the status and JSON body to answer with.
fn route(
    stream: &mut TcpStream,
    head: &Head,
    rest: Vec<u8>,
    shared: &Shared,
    deadline: Instant,
) -> std::result::Result<(u16, Value), Reject> {
    if !authorized(head, shared.token.as_deref()) {
        return Err(reject(401, "this server needs a token: send `Authorization: Bearer <token>`"));
    }
    match (head.path.as_str(), head.method.as_str()) {
        ("/params", "GET") => Ok((200, shared.hub.values_json())),
        ("/params", "POST") => {
            let body = read_body(stream, head, rest, &shared.stop, deadline)?;
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                reject(400, format!("malformed JSON: {e} (expected an object, e.g. {{\"prompt\": \"a fox\"}})"))
            })?;
            shared.hub.apply_json(&value).map(|values| (200, values)).map_err(|e| reject(400, e))
        }
        ("/params", method) => Err(reject(405, format!("{} /params: use GET or POST", preview(method, SHOWN_CHARS)))),
        ("/ws", "GET") => Err(reject(426, "/ws takes a WebSocket upgrade")),
        ("/ws", method) => Err(reject(
            405,
            format!("{} /ws: open a WebSocket (GET with Upgrade: websocket)", preview(method, SHOWN_CHARS)),
        )),
        (path, _) => {
            let path = preview(path, SHOWN_CHARS);
            Err(reject(404, format!("no such path `{path}`: use GET/POST /params or the WebSocket /ws")))
        }
    }
}

/// The request body, at most [`MAX_BODY`] bytes whatever the headers say.
fn read_body(
    stream: &mut TcpStream,
    head: &Head,
    rest: Vec<u8>,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::result::Result<Vec<u8>, Reject> {
    let too_large = || reject(413, format!("body over {MAX_BODY} bytes"));
    let mut input = Body { stream, buffered: rest, at: 0, stop, deadline };
    if let Some(encoding) = head.header("transfer-encoding") {
        if !encoding.trim().eq_ignore_ascii_case("chunked") {
            return Err(reject(
                501,
                format!(
                    "transfer encoding `{}` not supported (use chunked or Content-Length)",
                    preview(encoding, SHOWN_CHARS)
                ),
            ));
        }
        continue_if_expected(&mut input, head);
        return read_chunked(&mut input, too_large);
    }
    let lengths: Vec<&str> =
        head.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    let Some(first) = lengths.first() else { return Ok(Vec::new()) };
    if lengths.iter().any(|l| l != first) {
        return Err(reject(400, "conflicting Content-Length headers"));
    }
    let length: u64 =
        first.parse().map_err(|_| reject(400, format!("bad Content-Length `{}`", preview(first, SHOWN_CHARS))))?;
    if length > MAX_BODY as u64 {
        return Err(too_large());
    }
    continue_if_expected(&mut input, head);
    let mut body = vec![0; length as usize];
    input.read_exact(&mut body)?;
    Ok(body)
}

/// Tell a client that waits for it (curl does, for bodies over 1 KiB) to send the body.
fn continue_if_expected(input: &mut Body<'_>, head: &Head) {
    if head.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) && input.buffered.is_empty() {
        let _ = input.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}

/// A chunked body, stopping at [`MAX_BODY`] bytes.
fn read_chunked(input: &mut Body<'_>, too_large: impl Fn() -> Reject) -> std::result::Result<Vec<u8>, Reject> {
    let mut body = Vec::new();
    loop {
        let line = input.line()?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| reject(400, format!("bad chunk size `{size}`")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !input.line()?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(too_large());
        }
        let start = body.len();
        body.resize(start + size, 0);
        input.read_exact(&mut body[start..])?;
        if !input.line()?.is_empty() {
            return Err(reject(400, "malformed chunked body: a chunk is longer than its size"));
        }
    }
}

/// The body's bytes: those read with the head, then the stream's.
struct Body<'a> {
    stream: &'a mut TcpStream,
    buffered: Vec<u8>,
    at: usize,
    stop: &'a AtomicBool,
    deadline: Instant,
}

impl Body<'_> {
    fn byte(&mut self) -> std::result::Result<u8, Reject> {
        let mut b = [0u8];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn read_exact(&mut self, out: &mut [u8]) -> std::result::Result<(), Reject> {
        let mut filled = 0;
        while filled < out.len() {
            if self.at < self.buffered.len() {
                let n = (out.len() - filled).min(self.buffered.len() - self.at);
                out[filled..filled + n].copy_from_slice(&self.buffered[self.at..self.at + n]);
                self.at += n;
                filled += n;
                continue;
            }
            match read_some(self.stream, &mut out[filled..], self.stop, self.deadline) {
                Ok(0) => return Err(reject(400, "the body ended before its length")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(reject(408, "the body did not arrive in time"));
                }
                Err(e) => return Err(reject(400, format!("reading the body failed: {e}"))),
            }
        }
        Ok(())
    }

    /// A line of a chunked body (without its CRLF), at most 1 KiB.
    fn line(&mut self) -> std::result::Result<String, Reject> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\n' => break,
                b => line.push(b),
            }
            if line.len() > 1024 {
                return Err(reject(400, "malformed chunked body: a line over 1 KiB"));
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }
}

/// The status line's reason phrase (HTTP's own for every status, `403 Forbidden` included).
fn reason(status: u16) -> &'static str {
    tungstenite::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown")
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value, extra: &[(&str, &str)]) -> std::io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// Answer and close. What the client still sends is read and dropped for a moment first: closing a socket with
/// unread data resets the connection, and the client could lose the answer (a 413 sent before the body).
fn finish(stream: &mut TcpStream, status: u16, body: &Value, extra: &[(&str, &str)], stop: &AtomicBool) {
    if respond(stream, status, body, extra).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0usize;
    while drained < 4 * 1024 * 1024 {
        match read_some(stream, &mut sink, stop, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Answer a WebSocket upgrade (RFC 6455 §4.2.2).
fn upgrade(stream: &mut TcpStream, head: &Head) -> std::result::Result<(), Reject> {
    if !head.lists("upgrade", "websocket") || !head.lists("connection", "upgrade") {
        return Err(reject(426, "/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err(reject(426, "WebSocket version 13 only"));
    }
    let key = head.header("sec-websocket-key").ok_or_else(|| reject(400, "Sec-WebSocket-Key missing"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \
         {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).map_err(|e| reject(400, e.to_string()))
}

/// Serve an open WebSocket until the client closes it or the server stops.
fn websocket(stream: TcpStream, rest: Vec<u8>, shared: &Shared) {
    let config = WebSocketConfig::default().max_message_size(Some(MAX_BODY)).max_frame_size(Some(MAX_BODY));
    let mut ws = WebSocket::from_partially_read(stream, rest, Role::Server, Some(config));
    let mut next_stats = Instant::now() + STATS_EVERY;
    let mut next_ping = Instant::now() + PING_EVERY;
    let mut heard = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "server stopping".into() }));
            let _ = ws.flush();
            return;
        }
        if heard.elapsed() > WS_SILENT {
            tracing::debug!("control: WebSocket silent for {} s, closed", WS_SILENT.as_secs());
            return;
        }
        let read = ws.read();
        if read.is_ok() {
            heard = Instant::now();
        }
        let reply = match read {
            Ok(Message::Text(text)) => Some(apply_message(&shared.hub, text.as_str())),
            Ok(Message::Binary(_)) => Some(json!({"error": "send JSON objects as text messages"})),
            // Pings are answered by the next write or flush; a close is answered likewise, after which reading
            // ends the loop.
            Ok(_) => None,
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return,
            Err(e) => {
                tracing::debug!("control: WebSocket dropped: {e}");
                return;
            }
        };
        if let Some(reply) = reply
            && ws.send(Message::text(reply.to_string())).is_err()
        {
            return;
        }
        if Instant::now() >= next_ping {
            next_ping = Instant::now() + PING_EVERY;
            if ws.send(Message::Ping(Vec::new().into())).is_err() {
                return;
            }
        }
        if Instant::now() >= next_stats {
            next_stats = Instant::now() + STATS_EVERY;
            let stats = shared.hub.stats_json();
            if !stats.is_null() && ws.send(Message::text(json!({"stats": stats}).to_string())).is_err() {
                return;
            }
        }
    }
}

/// A WebSocket message: the reply, `{"params": {...}}` or `{"error": "..."}`.
fn apply_message(hub: &ControlHub, text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(changes) => match hub.apply_json(&changes) {
            Ok(values) => json!({"params": values}),
            Err(e) => json!({"error": e}),
        },
        Err(e) => json!({"error": format!("malformed JSON: {e}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_told_from_others() {
        let bound: SocketAddr = "127.0.0.1:7860".parse().unwrap();
        for ok in ["127.0.0.1:7860", "localhost", "LOCALHOST:80", "[::1]:7860", "127.0.0.2"] {
            assert!(local_authority(ok, bound), "{ok}");
        }
        for bad in ["evil.example:7860", "192.168.1.4:7860", "[2001:db8::1]:80", "", "localhost.evil.com"] {
            assert!(!local_authority(bad, bound), "{bad}");
        }
        assert!(local_authority("10.0.0.5:9", "10.0.0.5:9".parse().unwrap()), "the address bound");
    }

    /// Serve one request on this thread; the reply and what was logged.
    fn serve_one(shared: &Shared, request: String) -> (String, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            reply
        });
        let (stream, peer) = listener.accept().unwrap();
        let logged = crate::control::capture_logs(|| connection(stream, peer, shared));
        (client.join().unwrap(), logged)
    }

    #[test]
    fn requests_are_logged_bounded_and_refusals_throttled() {
        let shared = Shared {
            hub: Arc::new(crate::control::sample_hub()),
            token: None,
            stop: Arc::new(AtomicBool::new(false)),
            addr: "127.0.0.1:7860".parse().unwrap(),
            refusals: Mutex::new(Throttle::per_second()),
        };
        let long = "/x".repeat(5000);
        let (reply, logged) = serve_one(&shared, format!("GET {long} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
        assert!(reply.starts_with("HTTP/1.1 404") && reply.contains("(10000 chars)"), "{reply}");
        assert!(logged.contains("(10000 chars)") && logged.len() < 600, "{logged}");
        let prompt = "a harbour at dusk ".repeat(2000);
        let body = json!({ "prompt": prompt }).to_string();
        let post = format!("POST /params HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let (reply, logged) = serve_one(&shared, post);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let logged: Vec<&str> = logged.lines().filter(|l| !l.contains(" TRACE ")).collect();
        let logged = logged.join("\n");
        assert!(logged.contains("live change") && logged.contains("(36000 chars)") && logged.len() < 1000, "{logged}");
        let mut warnings = 0;
        for _ in 0..3 {
            let request = "GET /params HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\n\r\n".to_string();
            let (reply, logged) = serve_one(&shared, request);
            assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
            warnings += logged.lines().filter(|l| l.contains(" WARN ")).count();
        }
        assert_eq!(warnings, 1, "one warning a second");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
