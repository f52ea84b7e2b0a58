//! The network inputs of live control: HTTP and WebSocket on one port, OSC over UDP; and fuzzing of every input
//! form (JSON bodies, stdin lines, OSC packets) against the hub's invariant that its values always pass the check.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latentcam::config::View;
use latentcam::control::http::{self, HttpServer};
use latentcam::control::osc;
use latentcam::control::{ControlHub, Limits, LiveValues};
use latentcam::diffusion::Params;
use latentcam::pose::smooth::SmoothingSettings;
use proptest::prelude::*;
use rosc::{OscBundle, OscMessage, OscPacket, OscTime, OscType};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

fn limits() -> Limits {
    common::sample_limits()
}

fn params() -> Params {
    common::sample_params()
}

fn hub() -> Arc<ControlHub> {
    Arc::new(ControlHub::new(LiveValues::new(&params(), 0, 0.0, 0.01, None, None), limits()))
}

/// A hub with every value live: pose-guided, with a window.
fn full_hub() -> ControlHub {
    let values =
        LiveValues::new(&params(), 0, 0.0, 0.01, Some((1.0, SmoothingSettings::default())), Some(View::Output));
    ControlHub::new(values, limits())
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server(token: Option<&str>) -> (Arc<ControlHub>, HttpServer) {
    let hub = hub();
    let server = http::serve(hub.clone(), local(), token.map(str::to_string)).unwrap();
    (hub, server)
}

/// A response: status, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.json())).to_string()
    }
}

/// Send raw bytes as a request and read the whole response.
fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8(response[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: response[end..].to_vec() }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        text.push_str("\r\n");
    }
    raw(addr, text.as_bytes())
}

#[test]
fn get_returns_the_values() {
    let (hub, server) = server(None);
    let reply = request(server.local_addr(), "GET", "/params", None, None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), hub.values_json());
    assert_eq!(reply.json()["prompt"], json!("a cat"));
}

#[test]
fn post_changes_the_prompt_and_get_shows_it() {
    let (hub, server) = server(None);
    let addr = server.local_addr();
    let reply = request(addr, "POST", "/params", Some(r#"{"prompt": "a fox", "negative_prompt": "blur"}"#), None);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["prompt"], json!("a fox"));
    assert_eq!(reply.json()["negative-prompt"], json!("blur"));
    assert_eq!(hub.values().prompt, "a fox");
    assert_eq!(request(addr, "GET", "/params?x=1", None, None).json()["prompt"], json!("a fox"));
}

#[test]
fn bad_requests_are_400_naming_what_is_wrong() {
    let (hub, server) = server(None);
    let addr = server.local_addr();
    let unknown = request(addr, "POST", "/params", Some(r#"{"prompt": "a fox", "colour": 1}"#), None);
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.header("content-type"), Some("application/json"));
    assert!(unknown.error().contains("unknown key `colour`"), "{}", unknown.error());
    let bad = request(addr, "POST", "/params", Some(r#"{"steps": 12}"#), None);
    assert_eq!(bad.status, 400);
    assert!(bad.error().starts_with("steps:"), "{}", bad.error());
    let malformed = request(addr, "POST", "/params", Some(r#"{"prompt": "#), None);
    assert_eq!(malformed.status, 400);
    assert!(malformed.error().contains("malformed JSON"), "{}", malformed.error());
    let not_an_object = request(addr, "POST", "/params", Some("[1, 2]"), None);
    assert_eq!(not_an_object.status, 400);
    assert!(not_an_object.error().contains("JSON object"), "{}", not_an_object.error());
    let garbage = raw(addr, b"\x00\x01 not http\r\n\r\n");
    assert_eq!(garbage.status, 400);
    assert_eq!(hub.values().prompt, "a cat", "nothing applied");
    // The server goes on.
    assert_eq!(request(addr, "GET", "/params", None, None).status, 200);
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let (_hub, server) = server(None);
    let addr = server.local_addr();
    let missing = request(addr, "GET", "/nope", None, None);
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("/nope"));
    let put = request(addr, "PUT", "/params", Some("{}"), None);
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));
    assert_eq!(request(addr, "DELETE", "/params", None, None).status, 405);
    assert_eq!(request(addr, "POST", "/ws", Some("{}"), None).status, 405);
    // /ws without an upgrade.
    assert_eq!(request(addr, "GET", "/ws", None, None).status, 426);
}

#[test]
fn bodies_over_64_kib_are_413() {
    let (hub, server) = server(None);
    let addr = server.local_addr();
    let big = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(66 * 1024));
    let reply = request(addr, "POST", "/params", Some(&big), None);
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("body over"), "{}", reply.error());
    // A chunked body is counted as it arrives.
    let mut chunked = b"POST /params HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..70 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(addr, &chunked).status, 413);
    // A small chunked body works.
    let body = r#"{"prompt": "a chunked fox"}"#;
    let small = format!(
        "POST /params HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    assert_eq!(raw(addr, small.as_bytes()).status, 200);
    assert_eq!(hub.values().prompt, "a chunked fox");
    // A body longer than its Content-Length is read only as far as the length says.
    let lying = format!("POST /params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{big}");
    let reply = raw(addr, lying.as_bytes());
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("malformed JSON"));
    assert_eq!(hub.values().prompt, "a chunked fox");
}

#[test]
fn request_heads_over_16_kib_are_431() {
    let (_hub, server) = server(None);
    let addr = server.local_addr();
    let big = format!("GET /params HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\n\r\n", "y".repeat(20 * 1024));
    assert_eq!(raw(addr, big.as_bytes()).status, 431);
    assert_eq!(request(addr, "GET", "/params", None, None).status, 200, "the server goes on");
}

#[test]
fn a_token_is_required_when_set() {
    let (hub, server) = server(Some("s3cret"));
    let addr = server.local_addr();
    let none = request(addr, "GET", "/params", None, None);
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert!(none.error().contains("Authorization: Bearer"));
    assert_eq!(request(addr, "GET", "/params", None, Some("s3cret2")).status, 401);
    assert_eq!(request(addr, "GET", "/params", None, Some("wrong")).status, 401);
    assert_eq!(request(addr, "POST", "/params", Some(r#"{"prompt": "x"}"#), Some("wrong")).status, 401);
    assert_eq!(hub.values().prompt, "a cat");
    assert_eq!(request(addr, "GET", "/nope", None, None).status, 401, "no path is shown without the token");
    let right = request(addr, "GET", "/params", None, Some("s3cret"));
    assert_eq!(right.status, 200);
    assert_eq!(right.json()["prompt"], json!("a cat"));
    // The WebSocket upgrade too.
    assert!(ws_connect(addr, None).is_err());
    assert!(ws_connect(addr, Some("wrong")).is_err());
    let mut ws = ws_connect(addr, Some("s3cret")).unwrap();
    assert_eq!(ws_ask(&mut ws, json!({"prompt": "a fox"}))["params"]["prompt"], json!("a fox"));
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn ws_connect(addr: SocketAddr, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    ws_connect_from(TcpStream::connect(addr).unwrap(), addr, token)
}

/// A connection to `addr` from the loopback address `from` (127.0.0.x: another peer on this machine).
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

fn ws_connect_from(stream: TcpStream, addr: SocketAddr, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    if let Some(token) = token {
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake interrupted"),
    }
}

/// The next text message as JSON, waiting up to `within`.
fn ws_next(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("WebSocket: {e}"),
        }
    }
    None
}

/// Send a change and return the reply to it (skipping statistics pushes).
fn ws_ask(ws: &mut Ws, message: Value) -> Value {
    ws.send(Message::text(message.to_string())).unwrap();
    loop {
        let reply = ws_next(ws, Duration::from_secs(5)).expect("a reply");
        if reply.get("stats").is_none() {
            return reply;
        }
    }
}

#[test]
fn the_websocket_applies_changes_and_pushes_statistics() {
    let (hub, server) = server(None);
    let addr = server.local_addr();
    let mut ws = ws_connect(addr, None).unwrap();
    let reply = ws_ask(&mut ws, json!({"prompt": "a fox", "steps": 2}));
    assert_eq!(reply["params"]["prompt"], json!("a fox"));
    assert_eq!(reply["params"]["steps"], json!(2));
    assert_eq!(hub.values().steps, 2);
    let bad = ws_ask(&mut ws, json!({"steps": 12}));
    assert!(bad["error"].as_str().unwrap().starts_with("steps:"), "{bad}");
    let unknown = ws_ask(&mut ws, json!({"colour": "red"}));
    assert!(unknown["error"].as_str().unwrap().contains("colour"), "{unknown}");
    ws.send(Message::text("{not json")).unwrap();
    let malformed = ws_next(&mut ws, Duration::from_secs(5)).unwrap();
    assert!(malformed["error"].as_str().unwrap().contains("malformed JSON"), "{malformed}");

    hub.set_stats(json!({"fps": 12.5}));
    let started = Instant::now();
    let stats = loop {
        let message = ws_next(&mut ws, Duration::from_millis(2500)).expect("statistics within 2.5 s");
        if let Some(stats) = message.get("stats") {
            break stats.clone();
        }
    };
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(stats, json!({"fps": 12.5}));
    ws.close(None).unwrap();
}

#[test]
fn several_websockets_at_once_and_one_leaving_disturbs_nothing() {
    let (hub, server) = server(None);
    let addr = server.local_addr();
    let mut a = ws_connect(addr, None).unwrap();
    let mut b = ws_connect(addr, None).unwrap();
    let c = ws_connect(addr, None).unwrap();
    assert_eq!(ws_ask(&mut a, json!({"seed": 5}))["params"]["seed"], json!(5));
    assert_eq!(ws_ask(&mut b, json!({"seed": 6}))["params"]["seed"], json!(6));
    // One goes away without a close frame, another half way through a frame.
    drop(c);
    let mut half = b.get_ref().try_clone().unwrap();
    half.write_all(&[0x81, 0x85, 1, 2]).unwrap();
    drop(half);
    drop(b);
    assert_eq!(ws_ask(&mut a, json!({"seed": 7}))["params"]["seed"], json!(7));
    assert_eq!(request(addr, "GET", "/params", None, None).json()["seed"], json!(7));
    assert_eq!(hub.values().seed, 7);
}

#[test]
fn dropping_the_server_stops_it_promptly_with_clients_connected() {
    let (_hub, server) = server(None);
    let addr = server.local_addr();
    let _ws = ws_connect(addr, None).unwrap();
    // A client that sends half a request and waits.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /par").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(2), "drop took {:?}", started.elapsed());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "nothing listens any more");
    // Bound to every address, it is woken all the same.
    let server = http::serve(hub(), "0.0.0.0:0".parse().unwrap(), None).unwrap();
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(1), "drop took {:?}", started.elapsed());
}

/// A plain GET /params from the loopback address `from`.
fn get_from(from: [u8; 4], addr: SocketAddr) -> Reply {
    let mut stream = connect_from(from, addr);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("GET /params HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let status = String::from_utf8_lossy(&response[..end]).split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, headers: Vec::new(), body: response[end..].to_vec() }
}

/// One peer address holds at most half the connections: a client that keeps opening them is refused itself, and
/// the others are still served; past the total, everyone is refused until connections close.
#[test]
fn connections_past_the_limits_are_refused_with_503() {
    let (_hub, server) = server(None);
    let addr = server.local_addr();
    let open_from = |from: [u8; 4], n: usize| -> Vec<Ws> {
        (0..n).map(|_| ws_connect_from(connect_from(from, addr), addr, None).unwrap()).collect()
    };
    let greedy = open_from([127, 0, 0, 1], http::MAX_CONNECTIONS_PER_PEER);
    let refused = get_from([127, 0, 0, 1], addr);
    assert_eq!(refused.status, 503);
    assert!(refused.error().contains("too many connections from 127.0.0.1 (at most 8)"), "{}", refused.error());
    assert_eq!(get_from([127, 0, 0, 2], addr).status, 200, "another peer is served");
    let others = open_from([127, 0, 0, 2], http::MAX_CONNECTIONS - http::MAX_CONNECTIONS_PER_PEER);
    let full = get_from([127, 0, 0, 3], addr);
    assert_eq!(full.status, 503);
    assert!(full.error().contains("too many connections (at most 16)"), "{}", full.error());
    drop((greedy, others));
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_from([127, 0, 0, 1], addr).status != 200 {
        assert!(Instant::now() < deadline, "connections are served again once others close");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_address_in_use_is_an_environment_error_naming_it() {
    let taken = TcpListener::bind(local()).unwrap();
    let addr = taken.local_addr().unwrap();
    let error = http::serve(hub(), addr, None).err().expect("the port is taken");
    assert_eq!(error.kind(), latentcam::error::ErrorKind::Environment);
    assert!(error.chain_text().contains(&addr.to_string()), "{}", error.chain_text());
    assert!(error.chain_text().starts_with("cannot listen on http://"), "{}", error.chain_text());
    let udp = UdpSocket::bind(local()).unwrap();
    let addr = udp.local_addr().unwrap();
    let error = osc::serve(hub(), addr).err().expect("the port is taken");
    assert_eq!(error.kind(), latentcam::error::ErrorKind::Environment);
    assert!(error.chain_text().contains(&addr.to_string()), "{}", error.chain_text());
}

fn osc_message(param: &str, args: Vec<OscType>) -> Vec<u8> {
    let addr = format!("/latentcam/{param}");
    rosc::encoder::encode(&OscPacket::Message(OscMessage { addr, args })).unwrap()
}

/// Wait until `check` holds for the hub's values.
fn eventually(hub: &ControlHub, what: &str, check: impl Fn(&LiveValues) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check(&hub.values()) {
        assert!(Instant::now() < deadline, "{what}: values are {:?}", hub.values());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn osc_messages_change_values() {
    let hub = hub();
    let server = osc::serve(hub.clone(), local()).unwrap();
    let client = UdpSocket::bind(local()).unwrap();
    let to = server.local_addr();
    client.send_to(&osc_message("prompt", vec![OscType::String("a fox".into())]), to).unwrap();
    eventually(&hub, "prompt", |v| v.prompt == "a fox");
    client.send_to(&osc_message("steps", vec![OscType::Float(2.0)]), to).unwrap();
    eventually(&hub, "steps", |v| v.steps == 2);
    client.send_to(&osc_message("negative_prompt", vec![OscType::String("blur".into())]), to).unwrap();
    eventually(&hub, "negative prompt", |v| v.negative_prompt == "blur");
    client.send_to(&osc_message("strength", vec![OscType::Float(0.7)]), to).unwrap();
    eventually(&hub, "strength", |v| v.strength == 0.7);
    client.send_to(&osc_message("timesteps", vec![OscType::Int(999), OscType::Int(499)]), to).unwrap();
    eventually(&hub, "timesteps", |v| v.timesteps == Some(vec![999, 499]));
    client.send_to(&osc_message("timesteps", vec![OscType::Nil]), to).unwrap();
    eventually(&hub, "timesteps off", |v| v.timesteps.is_none());
    // A bundle, nested or not, applies as one change.
    let bundle = OscPacket::Bundle(OscBundle {
        timetag: OscTime { seconds: 0, fractional: 1 },
        content: vec![
            OscPacket::Message(OscMessage { addr: "/latentcam/steps".into(), args: vec![OscType::Int(4)] }),
            OscPacket::Bundle(OscBundle {
                timetag: OscTime { seconds: 0, fractional: 1 },
                content: vec![OscPacket::Message(OscMessage {
                    addr: "/latentcam/seed".into(),
                    args: vec![OscType::Long(42)],
                })],
            }),
        ],
    });
    client.send_to(&rosc::encoder::encode(&bundle).unwrap(), to).unwrap();
    eventually(&hub, "bundle", |v| v.steps == 4 && v.seed == 42);
}

#[test]
fn osc_garbage_does_not_stop_the_server() {
    let hub = hub();
    let server = osc::serve(hub.clone(), local()).unwrap();
    let client = UdpSocket::bind(local()).unwrap();
    let to = server.local_addr();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 3],
        b"/latentcam/prompt".to_vec(),
        b"#bundle\0\0\0\0\0\0\0\0\x01\xff\xff\xff\xff".to_vec(),
        osc_message("steps", vec![OscType::Int(99)]),
        osc_message("colour", vec![OscType::Int(1)]),
        osc_message("prompt", vec![]),
        osc_message("prompt", vec![OscType::Blob(vec![1, 2, 3])]),
        rosc::encoder::encode(&OscPacket::Message(OscMessage { addr: "/other".into(), args: vec![OscType::Int(1)] }))
            .unwrap(),
        vec![b'/'; 60000],
    ];
    for g in &garbage {
        client.send_to(g, to).unwrap();
    }
    client.send_to(&osc_message("prompt", vec![OscType::String("still here".into())]), to).unwrap();
    eventually(&hub, "a valid message after garbage", |v| v.prompt == "still here");
    assert_eq!(hub.values().steps, 1, "the bad steps was ignored");
}

// Fuzzing: whatever arrives, no panic, and the values always pass the check.

fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        // Every live name, from the knobs' declarations.
        prop::sample::select(latentcam::knobs::live().filter_map(|k| k.live).collect::<Vec<_>>())
            .prop_map(str::to_string),
        prop::sample::select(vec![
            "params.prompt",
            "negative_prompt",
            "params.steps",
            "engine.similarity-threshold",
            "pose.beta",
            "pose.controlnet-scale",
            "window.view",
            "/steps",
            "engine.stream-batch",
        ])
        .prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..1200).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-2.0f64..20.0).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(vec!["output", "input", "side-by-side", "pose", "sideways"])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(2, 16, 8, |inner| prop::collection::vec(inner, 0..8).prop_map(Value::Array))
}

fn osc_args() -> impl Strategy<Value = OscType> {
    prop_oneof![
        any::<i32>().prop_map(OscType::Int),
        (0i32..1000).prop_map(OscType::Int),
        any::<i64>().prop_map(OscType::Long),
        any::<f32>().prop_map(OscType::Float),
        (-1.0f32..10.0).prop_map(OscType::Float),
        any::<f64>().prop_map(OscType::Double),
        ".{0,20}".prop_map(OscType::String),
        any::<bool>().prop_map(OscType::Bool),
        any::<char>().prop_map(OscType::Char),
        Just(OscType::Nil),
        Just(OscType::Inf),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(OscType::Blob),
        prop::collection::vec((0i32..1000).prop_map(OscType::Int), 0..4)
            .prop_map(|content| OscType::Array(rosc::OscArray { content })),
    ]
}

fn osc_packets() -> impl Strategy<Value = OscPacket> {
    let message = (keys(), prop::collection::vec(osc_args(), 0..4), any::<bool>()).prop_map(|(key, args, prefixed)| {
        let addr = if prefixed { format!("/latentcam/{key}") } else { format!("/{key}") };
        OscPacket::Message(OscMessage { addr, args })
    });
    message.prop_recursive(3, 12, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|content| {
            OscPacket::Bundle(OscBundle { timetag: OscTime { seconds: 0, fractional: 1 }, content })
        })
    })
}

fn assert_valid(hub: &ControlHub) {
    hub.values().check(&limits()).unwrap_or_else(|e| panic!("the hub holds values that fail the check: {e}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_bytes_never_break_the_hub(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let hub = full_hub();
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = hub.apply_json(&value);
        }
        assert_valid(&hub);
    }

    #[test]
    fn json_objects_never_break_the_hub(changes in prop::collection::vec((keys(), json_values()), 0..5)) {
        let hub = full_hub();
        let body = Value::Object(changes.into_iter().collect());
        if let Ok(values) = hub.apply_json(&body) {
            prop_assert_eq!(values, hub.values_json());
        }
        assert_valid(&hub);
        let plain = ControlHub::new(LiveValues::new(&params(), 0, 0.0, 0.01, None, None), limits());
        let _ = plain.apply_json(&body);
        assert_valid(&plain);
    }

    #[test]
    fn stdin_lines_never_break_the_hub(key in keys(), value in ".{0,30}", line in ".{0,40}") {
        let hub = full_hub();
        let _ = hub.apply_line(&format!("{key}={value}"));
        assert_valid(&hub);
        let _ = hub.apply_line(&line);
        assert_valid(&hub);
    }

    #[test]
    fn osc_bytes_never_break_the_hub(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let hub = full_hub();
        osc::handle_packet(&hub, &bytes);
        assert_valid(&hub);
    }

    #[test]
    fn osc_packets_never_break_the_hub(packet in osc_packets(), cut in any::<prop::sample::Index>()) {
        let hub = full_hub();
        let bytes = rosc::encoder::encode(&packet).unwrap();
        osc::handle_packet(&hub, &bytes);
        assert_valid(&hub);
        // And truncated.
        osc::handle_packet(&hub, &bytes[..cut.index(bytes.len() + 1)]);
        assert_valid(&hub);
    }
}

#[test]
fn web_pages_and_rebound_names_are_refused_without_a_token() {
    let (hub, open) = server(None);
    let addr = open.local_addr();
    let post = |extra: &str| {
        let body = r#"{"prompt": "hijacked"}"#;
        let text = format!(
            "POST /params HTTP/1.1\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(addr, text.as_bytes())
    };
    // A page on another site posting a "simple request" (no preflight), and a page reached by DNS rebinding.
    let forged = post(&format!("Host: {addr}\r\nOrigin: https://evil.example\r\n"));
    assert_eq!(forged.status, 403, "{}", String::from_utf8_lossy(&forged.body));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET /params HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "the status line names the status: {reply}");
    let rebound = post("Host: evil.example:7860\r\n");
    assert_eq!(rebound.status, 403);
    assert_eq!(hub.values().prompt, "a cat", "nothing applied");
    // A WebSocket opened by a page elsewhere.
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(raw(addr, upgrade.as_bytes()).status, 403);
    // This machine's own page and tools are fine.
    let local = post(&format!("Host: localhost:{}\r\nOrigin: http://127.0.0.1:8080\r\n", addr.port()));
    assert_eq!(local.status, 200, "{}", String::from_utf8_lossy(&local.body));
    // With a token the token decides.
    let (_, guarded) = server(Some("s3cret"));
    let text = "GET /params HTTP/1.1\r\nHost: studio.lan\r\nOrigin: https://panel.studio.lan\r\n\
                Authorization: Bearer s3cret\r\n\r\n";
    assert_eq!(raw(guarded.local_addr(), text.as_bytes()).status, 200);
}
