//! HTTP and WebSocket control on one port.
//!
//! - `GET /params`: the current values (200, JSON).
//! - `POST /params` with a JSON object of some values: applied as one change; 200 with the new full set, or 400
//!   `{"error": "..."}` naming the bad key or value (nothing changes then); a body over 64 KiB is 413, one that
//!   does not arrive within 10 s is 408.
//! - `/ws`: a WebSocket. Each text message is a JSON object applied like `POST /params`, answered with
//!   `{"params": {...}}` or `{"error": "..."}`; once a second the server pushes `{"stats": {...}}` (the latest
//!   pipeline statistics, once there are any).
//! - `POST /whep` (a WHEP viewer's SDP offer, with a `whep` sink) and `POST /whip` (a WHIP publisher's, with a
//!   `whip` source): 201 with the answer and a `Location` that `DELETE` ends; preflights answered for pages on
//!   other origins ([`crate::webrtc`]).
//!
//! With a token every request, the WebSocket upgrade included, must carry `Authorization: Bearer <token>`
//! (else 401). Without one, requests from web pages and rebound names are refused ([`foreign`]). Every response
//! is JSON and closes its connection.
//!
//! The server is axum's routing over hyper's HTTP/1 connections, on a single-threaded Tokio runtime of its own
//! thread: the accept loop is ours, so that at most [`MAX_CONNECTIONS`] connections are served at once and at
//! most [`MAX_CONNECTIONS_PER_PEER`] from one address (more are answered 503). A request head must arrive within
//! 10 s and fit in [`MAX_HEAD`] bytes (else hyper answers 431). Dropping the [`HttpServer`] stops the loop,
//! closes the WebSockets with a close frame and joins the thread within a fraction of a second.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;

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
/// The time a client has to send a request head, and then its body.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How often the WebSocket pushes statistics.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// A WebSocket is pinged this often; one that has sent nothing (not even the pong) for [`WS_SILENT`] is closed,
/// so vanished clients do not hold connection slots.
const PING_EVERY: Duration = Duration::from_secs(10);
const WS_SILENT: Duration = Duration::from_secs(30);
/// How long stopping waits for open connections to finish (WebSockets send their close frame).
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A running control server; dropping it stops it.
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What every request handler shares.
struct Shared {
    hub: Arc<ControlHub>,
    token: Option<String>,
    /// Lets a viewer watch (`/whep`) but change nothing.
    view_token: Option<String>,
    /// The address bound (a `Host` naming it is this server).
    addr: SocketAddr,
    /// Refused requests are warned about at most once a second (a web page can send them by the thousand).
    refusals: Mutex<Throttle>,
    /// Set when the server stops: WebSockets close.
    stop: watch::Receiver<bool>,
}

/// Listen on `addr` (port 0: any free port) and serve `hub` until the returned server is dropped.
pub fn serve(hub: Arc<ControlHub>, addr: SocketAddr, token: Option<String>) -> Result<HttpServer> {
    serve_tokens(hub, addr, token, None)
}

/// [`serve`] with a view token as well: it opens `/whep` (watching) and nothing else.
pub fn serve_tokens(
    hub: Arc<ControlHub>,
    addr: SocketAddr,
    token: Option<String>,
    view_token: Option<String>,
) -> Result<HttpServer> {
    let listen_error = |e: std::io::Error| listen_failed("http", addr, e);
    // Bound here, on the caller's thread, so that an address in use is the caller's error.
    let listener = TcpListener::bind(addr).map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        hub,
        token,
        view_token,
        addr,
        refusals: Mutex::new(Throttle::per_second()),
        stop: stopped.clone(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::internal("control HTTP runtime", e))?;
    let thread = std::thread::Builder::new()
        .name("control http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, shared, stopped).await,
                    Err(e) => tracing::warn!("control: the HTTP listener cannot be served: {e}"),
                }
            })
        })
        .map_err(|e| Error::internal("control HTTP thread", e))?;
    tracing::info!("control: HTTP and WebSocket on http://{addr} (GET/POST /params, /ws, POST /whep, POST /whip)");
    Ok(HttpServer { addr, stop, thread: Some(thread) })
}

/// A control server that cannot listen: the environment's failure (a port in use, an address not here).
pub(crate) fn listen_failed(scheme: &str, addr: SocketAddr, e: std::io::Error) -> Error {
    Error::Listen { address: format!("{scheme}://{addr}"), cause: because(e.to_string()) }
}

/// Open connections per peer address; a [`Slot`] holds one until dropped.
#[derive(Default)]
struct Slots {
    open: HashMap<IpAddr, usize>,
    total: usize,
}

struct Slot {
    slots: Arc<Mutex<Slots>>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.total = slots.total.saturating_sub(1);
        if let Some(n) = slots.open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                slots.open.remove(&self.peer);
            }
        }
    }
}

/// A slot for a connection from `peer`, or why there is none.
fn take_slot(slots: &Arc<Mutex<Slots>>, peer: IpAddr) -> std::result::Result<Slot, String> {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    let from_peer = s.open.get(&peer).copied().unwrap_or(0);
    if from_peer >= MAX_CONNECTIONS_PER_PEER {
        return Err(format!("too many connections from {peer} (at most {MAX_CONNECTIONS_PER_PEER})"));
    }
    if s.total >= MAX_CONNECTIONS {
        return Err(format!("too many connections (at most {MAX_CONNECTIONS})"));
    }
    s.total += 1;
    *s.open.entry(peer).or_default() += 1;
    Ok(Slot { slots: slots.clone(), peer })
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let app = router(shared.clone());
    let slots = Arc::new(Mutex::new(Slots::default()));
    let mut connections = tokio::task::JoinSet::new();
    // Refusals are answered by tasks of their own, at most as many as connections; past that, closed at once.
    let refusing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut busy = Throttle::per_second();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait and go on.
                    tracing::warn!("control: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (app, slot) = match take_slot(&slots, peer.ip()) {
            Ok(slot) => {
                // The slot goes with the request too: a WebSocket keeps it after its HTTP connection has ended.
                let slot = Arc::new(slot);
                (app.clone().layer(axum::Extension(Peer(peer))).layer(axum::Extension(slot.clone())), slot)
            }
            Err(why) => {
                use std::sync::atomic::Ordering;
                if refusing.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    continue;
                }
                busy.warn(format_args!("control: {why}; refusing one from {peer}"));
                refusing.fetch_add(1, Ordering::SeqCst);
                let counter = refusing.clone();
                let refusal = Router::new().fallback(move || {
                    let why = why.clone();
                    async move { error(StatusCode::SERVICE_UNAVAILABLE, why) }
                });
                connections.spawn(async move {
                    serve_connection(stream, refusal).await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
                continue;
            }
        };
        connections.spawn(async move {
            serve_connection(stream, app).await;
            drop(slot);
        });
    }
    // WebSockets see the stop and close; plain requests finish. Whatever is left after the grace is dropped.
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
        while slots.lock().unwrap_or_else(|p| p.into_inner()).total > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Serve one HTTP/1 connection: one request, then close (upgraded to a WebSocket, it lives on).
async fn serve_connection(stream: tokio::net::TcpStream, app: Router) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIME)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("control: connection ended: {e}");
    }
}

/// The peer of a request's connection.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/params", axum::routing::any(params))
        .route("/ws", axum::routing::any(ws))
        .route("/whep", axum::routing::any(whep))
        .route("/whep/{id}", axum::routing::any(whep_viewer))
        .route("/whip", axum::routing::any(whip))
        .route("/whip/{id}", axum::routing::any(whip_publisher))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Before any route: the web-page rule ([`foreign`]), then the token. Every request is logged (bounded).
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0.to_string()).unwrap_or_default();
    let method = preview(request.method().as_str(), SHOWN_CHARS);
    let path = preview(request.uri().path(), SHOWN_CHARS);
    let route = request.uri().path().to_string();
    let under = |p: &str| route == p || route.starts_with(&format!("{p}/"));
    // WebRTC's routes answer pages on other origins (the token decides); the view token opens watching only.
    let (watching, webrtc) = (under("/whep"), under("/whep") || under("/whip"));
    let response = if let Some(why) = foreign(request.headers(), &shared) {
        shared.refusals.lock().unwrap_or_else(|p| p.into_inner()).warn(format_args!("control: {peer}: {why}"));
        error(StatusCode::FORBIDDEN, why)
    } else if webrtc && request.method() == Method::OPTIONS {
        // A CORS preflight carries no credentials: it only asks what a page on another origin may send.
        preflight()
    } else if !(authorized(request.headers(), shared.token.as_deref())
        || watching && shared.view_token.is_some() && authorized(request.headers(), shared.view_token.as_deref()))
    {
        let mut response =
            error(StatusCode::UNAUTHORIZED, "this server needs a token: send `Authorization: Bearer <token>`");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    } else {
        next.run(request).await
    };
    tracing::debug!(peer, method, path, status = response.status().as_u16(), "control request");
    if webrtc { allow_pages(response) } else { response }
}

/// A page on another origin may read a WHEP or WHIP answer and its `Location` (it proves nothing: the token decides).
fn allow_pages(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location"));
    response
}

/// The answer to a CORS preflight for `/whep` and `/whip`.
fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// `POST /whep`: a viewer's SDP offer in, 201 with the answer and the viewer's `Location` out.
async fn whep(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let peers = shared.hub.viewers();
    offer(peers, "whep", "this run has no whep sink running", request).await
}

/// `POST /whip`: a publisher's SDP offer in, 201 with the answer and its `Location` out (409 while another
/// publishes).
async fn whip(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let peers = shared.hub.publishers();
    offer(peers, "whip", "this run's source is not a whip source", request).await
}

/// A WHIP or WHEP offer (`kind`), answered by `peers` on a blocking thread (webrtcbin takes 0.2-0.8 s).
async fn offer(peers: Option<Arc<dyn super::Peers>>, kind: &str, none: &str, request: Request) -> Response {
    let path = format!("/{kind}");
    if request.method() != Method::POST {
        return method_not_allowed(request.method(), &path, "POST, OPTIONS", "POST an SDP offer");
    }
    let sdp_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !sdp_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("POST {path} takes an SDP offer (Content-Type: application/sdp)"),
        );
    }
    let Some(peers) = peers else {
        return error(StatusCode::SERVICE_UNAVAILABLE, none);
    };
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let sdp = String::from_utf8_lossy(&body).into_owned();
    match tokio::task::spawn_blocking(move || peers.offer(&sdp)).await {
        Ok(Ok((id, answer))) => {
            let mut response = (StatusCode::CREATED, answer).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(location) = HeaderValue::from_str(&format!("{path}/{id}")) {
                headers.insert(header::LOCATION, location);
            }
            response
        }
        Ok(Err(e)) => {
            let status = match e {
                super::PeerError::BadOffer(_) => StatusCode::BAD_REQUEST,
                super::PeerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                super::PeerError::Busy(_) => StatusCode::CONFLICT,
                super::PeerError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the answer failed: {e}")),
    }
}

/// `DELETE /whep/<id>`: the viewer leaves.
async fn whep_viewer(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    method: Method,
) -> Response {
    end_peer(shared.hub.viewers(), "whep", &id, &method)
}

/// `DELETE /whip/<id>`: the publisher stops.
async fn whip_publisher(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    method: Method,
) -> Response {
    end_peer(shared.hub.publishers(), "whip", &id, &method)
}

fn end_peer(peers: Option<Arc<dyn super::Peers>>, kind: &str, id: &str, method: &Method) -> Response {
    let path = format!("/{kind}/{}", preview(id, SHOWN_CHARS));
    if method != Method::DELETE {
        return method_not_allowed(method, &path, "DELETE, OPTIONS", "DELETE ends it");
    }
    match peers {
        Some(peers) if peers.delete(id) => json_response(StatusCode::OK, &json!({"deleted": path})),
        _ => error(StatusCode::NOT_FOUND, format!("nothing at `{path}`")),
    }
}

async fn not_found(request: Request) -> Response {
    let path = preview(request.uri().path(), SHOWN_CHARS);
    error(StatusCode::NOT_FOUND, format!("no such path `{path}`: use GET/POST /params or the WebSocket /ws"))
}

fn method_not_allowed(method: &Method, path: &str, allow: &'static str, hint: &str) -> Response {
    let mut response =
        error(StatusCode::METHOD_NOT_ALLOWED, format!("{} {path}: {hint}", preview(method.as_str(), SHOWN_CHARS)));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn params(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match *request.method() {
        Method::GET => json_response(StatusCode::OK, &shared.hub.values_json()),
        Method::POST => {
            let body = match read_body(request.into_body()).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let value: Value = match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("malformed JSON: {e} (expected an object, e.g. {{\"prompt\": \"a fox\"}})"),
                    );
                }
            };
            match shared.hub.apply_json(&value) {
                Ok(values) => json_response(StatusCode::OK, &values),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        ref method => method_not_allowed(method, "/params", "GET, POST", "use GET or POST"),
    }
}

/// The request body, at most [`MAX_BODY`] bytes whatever the headers say, within [`REQUEST_TIME`]. A body too
/// large is still read (and dropped) for a moment before the 413, up to 4 MiB: closing a socket with unread data
/// resets the connection, and the client could lose the answer.
async fn read_body(body: Body) -> std::result::Result<Bytes, Response> {
    let mut body = body;
    let mut taken = Vec::new();
    let mut too_large = false;
    let read = tokio::time::timeout(REQUEST_TIME, async {
        let mut dropped = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
            let Ok(chunk) = frame.into_data() else { continue };
            if too_large {
                dropped += chunk.len();
                if dropped > 4 * 1024 * 1024 {
                    break;
                }
            } else if taken.len() + chunk.len() > MAX_BODY {
                too_large = true;
            } else {
                taken.extend_from_slice(&chunk);
            }
        }
        Ok::<(), String>(())
    })
    .await;
    match read {
        _ if too_large => Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {MAX_BODY} bytes"))),
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time")),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, e)),
        Ok(Ok(())) => Ok(Bytes::from(taken)),
    }
}

async fn ws(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.method() != Method::GET {
        return method_not_allowed(request.method(), "/ws", "GET", "open a WebSocket (GET with Upgrade: websocket)");
    }
    let (mut parts, _) = request.into_parts();
    let slot = parts.extensions.get::<Arc<Slot>>().cloned();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => {
            upgrade.max_message_size(MAX_BODY).max_frame_size(MAX_BODY).on_upgrade(move |socket| async move {
                websocket(socket, shared).await;
                drop(slot);
            })
        }
        Err(rejection) => {
            let mut response = error(
                StatusCode::UPGRADE_REQUIRED,
                format!("/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket): {rejection}"),
            );
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            response
        }
    }
}

/// Serve an open WebSocket until the client closes it, falls silent, or the server stops.
async fn websocket(mut socket: WebSocket, shared: Arc<Shared>) {
    tracing::debug!("control: WebSocket open");
    let mut stop = shared.stop.clone();
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut ping = tokio::time::interval(PING_EVERY);
    stats.tick().await;
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        let silent_until = heard + WS_SILENT;
        tokio::select! {
            _ = stop.changed() => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "server stopping".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
            }
            _ = tokio::time::sleep_until(silent_until) => {
                tracing::debug!("control: WebSocket silent for {} s, closed", WS_SILENT.as_secs());
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            _ = stats.tick() => {
                let stats = shared.hub.stats_json();
                if !stats.is_null() && socket.send(Message::text(json!({"stats": stats}).to_string())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => {
                let reply = match message {
                    Some(Ok(Message::Text(text))) => apply_message(&shared.hub, text.as_str()),
                    Some(Ok(Message::Binary(_))) => json!({"error": "send JSON objects as text messages"}),
                    Some(Ok(Message::Close(_))) | None => break,
                    // Pings are answered by axum; pongs only say the client is there.
                    Some(Ok(_)) => {
                        heard = tokio::time::Instant::now();
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::debug!("control: WebSocket dropped: {e}");
                        break;
                    }
                };
                heard = tokio::time::Instant::now();
                if socket.send(Message::text(reply.to_string())).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!("control: WebSocket closed");
}

/// Without a token only this machine's own tools may drive the stream, not a web page the streamer happens to
/// have open: a page's request from another site carries its `Origin` (cross-site request forgery, a WebSocket
/// included), and a page that reaches this port through a re-bound DNS name carries that name in `Host`. Either
/// is refused with 403. Tools (curl, OSC bridges, scripts) send no `Origin` and a loopback `Host`. With a token,
/// the token decides (a page cannot know it).
fn foreign(headers: &HeaderMap, shared: &Shared) -> Option<String> {
    if shared.token.is_some() {
        return None;
    }
    let hint = "set control.token to accept it";
    let text = |name| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    if let Some(host) = text(header::HOST)
        && !local_authority(&host, shared.addr)
    {
        let host = preview(&host, SHOWN_CHARS);
        return Some(format!("Host `{host}` is not this machine's own address; {hint}"));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
        if !authority.is_some_and(|a| local_authority(a, shared.addr)) {
            let origin = preview(&origin, SHOWN_CHARS);
            return Some(format!("a request from the web page `{origin}` is refused; {hint}"));
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

fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
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

    /// Serve one request through the router on this thread; the reply's status and body, and what was logged.
    fn serve_one(shared: &Arc<Shared>, request: axum::http::Request<Body>) -> (StatusCode, String, String) {
        use tower::ServiceExt;
        let mut reply = (StatusCode::OK, String::new());
        let logged = crate::control::capture_logs(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            reply = runtime.block_on(async {
                let response = router(shared.clone()).oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            });
        });
        (reply.0, reply.1, logged)
    }

    #[test]
    fn requests_are_logged_bounded_and_refusals_throttled() {
        let (_stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            hub: Arc::new(crate::control::sample_hub()),
            token: None,
            view_token: None,
            addr: "127.0.0.1:7860".parse().unwrap(),
            refusals: Mutex::new(Throttle::per_second()),
            stop: stopped,
        });
        let get = |path: &str, origin: Option<&str>| {
            let mut request = axum::http::Request::get(path).header("host", "127.0.0.1");
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            request.body(Body::empty()).unwrap()
        };
        let long = "/x".repeat(5000);
        let (status, reply, logged) = serve_one(&shared, get(&long, None));
        assert!(status == StatusCode::NOT_FOUND && reply.contains("(10000 chars)"), "{reply}");
        assert!(logged.contains("(10000 chars)") && logged.len() < 600, "{logged}");
        let prompt = "a harbour at dusk ".repeat(2000);
        let body = json!({ "prompt": prompt }).to_string();
        let post = axum::http::Request::post("/params").header("host", "localhost").body(Body::from(body)).unwrap();
        let (status, _, logged) = serve_one(&shared, post);
        assert_eq!(status, StatusCode::OK);
        let logged: Vec<&str> = logged.lines().filter(|l| !l.contains(" TRACE ")).collect();
        let logged = logged.join("\n");
        assert!(logged.contains("live change") && logged.contains("(36000 chars)") && logged.len() < 1000, "{logged}");
        let mut warnings = 0;
        for _ in 0..3 {
            let (status, _, logged) = serve_one(&shared, get("/params", Some("https://evil.example")));
            assert_eq!(status, StatusCode::FORBIDDEN);
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
