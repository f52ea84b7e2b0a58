//! What a careful user reads: messages and log lines name what is wrong and where it came from, show numbers in
//! their shortest form, and never echo a user's text (a 60 KB prompt, a packet's bytes) at length.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_bad_input, latentcam, path_str, stderr};

fn check(text: &str, overrides: &[&str]) -> std::process::Output {
    let tmp = common::temp_dir();
    let path = tmp.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let mut args = vec!["check", path_str(&path)];
    for o in overrides {
        args.extend(["--set", o]);
    }
    latentcam(&args)
}

fn demo() -> String {
    std::fs::read_to_string(common::root().join("pipelines/demo.toml")).unwrap()
}

fn error_line(out: &std::process::Output) -> String {
    stderr(out).lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string()
}

#[test]
fn a_tiny_strength_is_shown_in_its_shortest_form() {
    let out = check(&demo(), &["params.strength=1e-320"]);
    assert_bad_input(&out, "params.strength: 1e-320 leaves 0 of the 50 LCM timesteps");
    assert!(error_line(&out).len() < 250, "{}", error_line(&out));
    let tmp = common::temp_dir();
    let input = common::golden("img2img/sd15_lcm_2steps_input.png");
    let output = tmp.path().join("o.png");
    let model = common::model_dir("tiny-sd15-lcm-lora");
    let out = latentcam(&[
        "img2img",
        path_str(&input),
        path_str(&output),
        "--model",
        path_str(&model),
        "--strength",
        "1e-320",
    ]);
    assert_bad_input(&out, "invalid --strength: 1e-320 leaves 0 of the 50 LCM timesteps");
    assert!(!error_line(&out).contains("00000000"), "{}", error_line(&out));
    // A float where a whole number goes: the knob's message, its number short too.
    let out = check(&demo(), &["params.steps=1e-300"]);
    assert_bad_input(&out, "params.steps: 1e-300: expected a whole number from 1 to 8");
}

#[test]
fn a_key_given_twice_is_named_with_both_lines() {
    let out = check("mode=\"offline\"\nmode=\"live\"\n", &[]);
    assert_bad_input(&out, "duplicate key `mode` at line 2 (first set at line 1)");
    let text = demo().replace("[params]\n", "[params]\nseed = 1\n[model]\nsize = [64, 64]\n[params]\n");
    assert_bad_input(&check(&text, &[]), "duplicate table `[model]` at line 23 (first set at line 17)");
    let text = demo().replace("strength = 0.6\n", "strength = 0.6\nsteps = 2\n");
    assert_bad_input(&check(&text, &[]), "duplicate key `params.steps` at line 25 (first set at line 23)");
    let text = demo().replace("every = 30\n", "every = 30\nview = \"output\"\n");
    assert_bad_input(&check(&text, &[]), "duplicate key `sink.2.view` at line 41 (first set at line 39)");
}

#[test]
fn a_bad_value_from_set_names_the_set_not_a_line_of_the_file() {
    let out = check(&demo(), &["params.steps=1.5"]);
    assert_bad_input(&out, "params.steps: 1.5: expected a whole number from 1 to 8");
    let line = error_line(&out);
    assert!(line.ends_with("(from --set params.steps=1.5)") && !line.contains("line 23"), "{line}");
    let out = check(&demo(), &["sink.0.path=1"]);
    assert_bad_input(&out, "unknown field `path`");
    let line = error_line(&out);
    assert!(line.ends_with("(from --set sink.0.path=1)") && !line.contains("line 33"), "{line}");
    // The file's own bad value keeps its line, whatever --set changed besides.
    let text = demo().replace("steps = 1\n", "steps = 1.5\n");
    let out = check(&text, &["params.seed=3"]);
    assert_bad_input(&out, "params.steps: 1.5: expected a whole number");
    assert!(error_line(&out).ends_with("(at line 23)"), "{}", error_line(&out));
    let text =
        demo().replace("view = \"side-by-side\"\nonly-when = \"display\"", "path = \"x\"\nonly-when = \"display\"");
    let out = check(&text, &["sink.1.path=\"y.mp4\""]);
    assert_bad_input(&out, "unknown field `path`");
    assert!(error_line(&out).ends_with("(at line 28)"), "{}", error_line(&out));
}

/// A prompt of `n` one-token words, then `tail`.
fn long_prompt(n: usize, tail: &str) -> String {
    format!("{} {tail}", vec!["cat"; n].join(" "))
}

#[test]
fn a_prompt_over_77_tokens_is_warned_about() {
    let tmp = common::temp_dir();
    let input = common::golden("img2img/sd15_lcm_2steps_input.png");
    let output = tmp.path().join("o.png");
    let model = common::model_dir("tiny-sd15-lcm-lora");
    let prompt = long_prompt(80, "in the style of a faded technicolor film still");
    let out =
        latentcam(&["img2img", path_str(&input), path_str(&output), "--model", path_str(&model), "--prompt", &prompt]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings: Vec<String> =
        stderr(&out).lines().filter(|l| l.contains("limit of 77")).map(str::to_string).collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&out));
    assert!(warnings[0].contains("WARN") && warnings[0].contains("has 93 tokens"), "{}", warnings[0]);
    assert!(warnings[0].contains("\"cat cat cat cat cat in the style of a fa…\""), "{}", warnings[0]);
}

/// A live run controlled on stdin and over OSC, for `seconds` of test pattern; its stderr lines.
struct Live {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Live {
    fn start(dir: &Path) -> Live {
        let text = format!(
            r#"
mode = "live"
stats-interval-s = 0
[source]
kind = "test-pattern"
width = 64
height = 64
fps = 10
frames = 600
[model]
dir = "{model}"
size = [64, 64]
[control]
stdin = true
osc = "127.0.0.1:0"
[[sink]]
kind = "null"
"#,
            model = path_str(&common::model_dir("tiny-sd15-lcm-lora")),
        );
        let config = dir.join("live.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_latentcam"))
            .args(["--ep", "cpu", "--threads", "2", "run", path_str(&config)])
            .env("RUST_LOG", "latentcam=info")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let into = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                into.lock().unwrap().push(line);
            }
        });
        Live { child, lines }
    }

    fn wait_for_line(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no `{what}` line:\n{}", self.lines.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop it (Ctrl-C) and return everything it wrote to stderr.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().unwrap().clone();
        assert!(matches!(status.code(), Some(0 | 130)), "exit {status:?}:\n{}", lines.join("\n"));
        lines
    }
}

#[test]
fn live_changes_and_bad_packets_log_a_bounded_amount() {
    let tmp = common::temp_dir();
    let mut live = Live::start(tmp.path());
    let osc_line = live.wait_for_line("OSC on udp://");
    let osc: SocketAddr = osc_line.split("udp://").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();

    // 20 changes of a 60 KB prompt on stdin: 1.2 MB sent.
    let mut stdin = live.child.stdin.take().unwrap();
    let mut sent = 0;
    for i in 0..20 {
        let prompt = format!("{i} {}", "a harbour at dusk, oil on canvas, ".repeat(1800));
        sent += prompt.len();
        writeln!(stdin, "params.prompt=\"{prompt}\"").unwrap();
    }
    writeln!(stdin, "help").unwrap();
    stdin.flush().unwrap();
    live.wait_for_line("live values:");

    // 500 datagrams that do not decode (a string that is not UTF-8), as fast as they go.
    let mut packet = rosc::encoder::encode(&rosc::OscPacket::Message(rosc::OscMessage {
        addr: "/latentcam/prompt".into(),
        args: vec![rosc::OscType::String("SECRET-TEXT-\u{e9}".into())],
    }))
    .unwrap();
    let at = packet.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    packet[at] = 0xff;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..500 {
        socket.send_to(&packet, osc).unwrap();
    }
    live.wait_for_line("does not decode");
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let lines = live.stop();
    if std::env::var_os("LATENTCAM_SHOW_LOG").is_some() {
        eprintln!("{}", lines.join("\n"));
    }

    let total: usize = lines.iter().map(|l| l.len() + 1).sum();
    assert!(total < 40_000, "{total} bytes of log for {sent} bytes of prompts");
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 1000, "a log line of {longest} bytes");
    let changes: Vec<&String> = lines.iter().filter(|l| l.contains("live change")).collect();
    assert!(!changes.is_empty() && changes.iter().all(|l| l.contains(" chars)")), "{changes:?}");
    let osc_warnings: Vec<&String> = lines.iter().filter(|l| l.contains("does not decode")).collect();
    assert!((1..=3).contains(&osc_warnings.len()), "at most one a second: {osc_warnings:#?}");
    assert!(osc_warnings[0].contains(&format!("{} bytes", packet.len())), "{}", osc_warnings[0]);
    assert!(osc_warnings[0].contains(&socket.local_addr().unwrap().to_string()), "the peer: {}", osc_warnings[0]);
    assert!(!lines.iter().any(|l| l.contains("SECRET") || l.contains("83, 69, 67")), "no packet bytes in the log");
}
