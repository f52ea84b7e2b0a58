//! Live control of a running `latentcam run`: a prompt change over HTTP, over OSC and on stdin shows in the output
//! within a few frames, and `check` refuses control endpoints open to other machines without protection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latentcam::link::{LinkReceiver, Overflow, link};

/// Frames (by source sequence number) between the change and the first output that shows it. The change
/// applies from the next frame the diffusion thread starts; up to two frames are already past it (in the
/// preprocess thread and the link) and one may be in the model when it arrives.
const MAX_FRAMES_TO_SHOW: u64 = 4;

fn pipeline(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let input = dir.join("in").join("still.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8]))
        .save(&input)
        .unwrap();
    let text = format!(
        r#"
mode = "live"
stats-interval-s = 0
[source]
kind = "images"
path = "{input}"
fps = 10
loop = true
[model]
dir = "{model}"
size = [64, 64]
[params]
prompt = "a watercolor fox"
strength = 0.6
transition-frames = 0
[engine]
similarity-threshold = 0
[control]
http = "127.0.0.1:0"
osc = "127.0.0.1:0"
[[sink]]
kind = "png"
dir = "{frames}"
"#,
        input = common::path_str(&dir.join("in")),
        model = common::path_str(&common::model_dir("tiny-sd15-lcm-lora")),
        frames = common::path_str(&dir.join("frames")),
    );
    let path = dir.join("live.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The written frames: (sequence number, pixels), in order.
fn frames(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let n = p.file_stem()?.to_str()?.strip_prefix("frame_")?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    found.sort();
    // A file still being written does not decode yet: stop at the first one that does not.
    found.into_iter().map_while(|(n, p)| Some((n, image::open(&p).ok()?.to_rgb8().into_raw()))).collect()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Make a change with `send`, then find how many frames later the output shows it.
fn frames_until_shown(dir: &Path, send: impl FnOnce()) -> u64 {
    // Steady state: two identical outputs in a row.
    let (last, baseline) = wait_for("a steady output", Duration::from_secs(60), || {
        let f = frames(dir);
        let n = f.len();
        (n >= 2 && f[n - 1].1 == f[n - 2].1).then(|| f[n - 1].clone())
    });
    send();
    wait_for("the change to show", Duration::from_secs(30), || {
        frames(dir).into_iter().find(|(n, pixels)| *n > last && *pixels != baseline).map(|(n, _)| n - last)
    })
}

struct Running {
    child: Child,
    lines: LinkReceiver<String>,
    log: Vec<String>,
}

impl Running {
    /// The address a `control: ...` log line names after `prefix`.
    fn address(&mut self, prefix: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = self.log.iter().find_map(|l| {
                let rest = &l[l.find(prefix)? + prefix.len()..];
                rest.split([' ', '/']).next()?.parse().ok()
            }) {
                return addr;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Some(line)) => self.log.push(line),
                _ => panic!("no `{prefix}` line; stderr so far:\n{}", self.log.join("\n")),
            }
        }
    }
}

fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

fn post(addr: SocketAddr, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST /params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn a_running_pipeline_takes_prompt_changes_over_http_osc_and_stdin() {
    let tmp = common::temp_dir();
    let config = pipeline(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "2", "run", common::path_str(&config)])
        .env("RUST_LOG", "latentcam=info")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = link::<String>("stderr", 4096, Overflow::DropOldest);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut run = Running { child, lines, log: Vec::new() };
    let http_addr = run.address("HTTP and WebSocket on http://");
    let osc_addr = run.address("OSC on udp://");
    let out = tmp.path().join("frames");

    let reply = http(http_addr, "GET /params HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("\"prompt\":\"a watercolor fox\""), "{reply}");
    let bad = post(http_addr, r#"{"steps": 12}"#);
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("steps"), "{bad}");

    let by_http = frames_until_shown(&out, || {
        let reply = post(http_addr, r#"{"prompt": "a bronze statue"}"#);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    });
    let by_osc = frames_until_shown(&out, || {
        let message = rosc::OscPacket::Message(rosc::OscMessage {
            addr: "/latentcam/prompt".into(),
            args: vec![rosc::OscType::String("a glass sculpture".into())],
        });
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&rosc::encoder::encode(&message).unwrap(), osc_addr).unwrap();
    });
    let stdin = run.child.stdin.as_mut().unwrap();
    let by_stdin = frames_until_shown(&out, || {
        stdin.write_all(b"params.prompt=\"an oil painting of a harbour\"\n").unwrap();
        stdin.flush().unwrap();
    });
    eprintln!("frames until the change showed: HTTP {by_http}, OSC {by_osc}, stdin {by_stdin}");
    let reply = http(http_addr, "GET /params HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(reply.contains("an oil painting of a harbour"), "the last change is the current value: {reply}");

    let _ = Command::new("kill").args(["-INT", &run.child.id().to_string()]).status();
    let status = run.child.wait().unwrap();
    while let Ok(Some(line)) = run.lines.recv_timeout(Duration::from_millis(100)) {
        run.log.push(line);
    }
    assert!(!run.log.iter().any(|l| l.contains("panicked")), "{}", run.log.join("\n"));
    assert!(matches!(status.code(), Some(0 | 130)), "exit {status:?}:\n{}", run.log.join("\n"));
    for (input, n) in [("HTTP", by_http), ("OSC", by_osc), ("stdin", by_stdin)] {
        assert!(n <= MAX_FRAMES_TO_SHOW, "{input}: the change showed {n} frames later (at most {MAX_FRAMES_TO_SHOW})");
    }
}

fn check_with(dir: &Path, control: &str) -> std::process::Output {
    let text = std::fs::read_to_string(pipeline(dir)).unwrap();
    let text = text.replace("http = \"127.0.0.1:0\"\nosc = \"127.0.0.1:0\"\n", control);
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    common::latentcam(&["check", common::path_str(&path)])
}

#[test]
fn check_refuses_control_open_to_other_machines_without_protection() {
    let tmp = common::temp_dir();
    common::assert_bad_input(&check_with(tmp.path(), "http = \"0.0.0.0:7860\"\n"), "control.http");
    common::assert_bad_input(&check_with(tmp.path(), "osc = \"0.0.0.0:9000\"\n"), "osc-allow-remote");
    let ok = check_with(
        tmp.path(),
        "http = \"0.0.0.0:7860\"\ntoken = \"s3cret\"\nosc = \"0.0.0.0:9000\"\nosc-allow-remote = true\n",
    );
    assert!(ok.status.success(), "{}", common::stderr(&ok));
}
