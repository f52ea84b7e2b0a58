//! Every knob through every entry point it has — a pipeline file, `--set`, its command-line flag, HTTP
//! (`POST /params`), OSC, stdin — with its minimum, its maximum, the values just outside them and a value of the
//! wrong type: each entry point gives the same verdict, and every refusal names the same bounds (the knob's
//! declaration, `latentcam::knobs`). The real decoders are driven: pipeline text, the command line, HTTP request
//! bytes over TCP, OSC packets, stdin lines.
//!
//! And README's Parameters table is the one the declarations make.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use latentcam::config::{Pipeline, View};
use latentcam::control::{ControlHub, LiveValues};
use latentcam::knobs::{self, Knob, Range};
use latentcam::pose::smooth::SmoothingSettings;
use serde_json::{Value, json};

/// A value to try, as each kind of entry point writes it.
#[derive(Clone, Debug)]
struct Case {
    /// TOML (a file, `--set`, a stdin line).
    toml: String,
    /// JSON (HTTP; OSC sends the same).
    json: Value,
    /// The command line, when the value can be typed there.
    flag: Option<Vec<String>>,
    /// The declaration takes it.
    ok: bool,
}

fn case(toml: &str, json: Value, flag: Option<&str>, ok: bool) -> Case {
    Case { toml: toml.into(), json, flag: flag.map(|f| f.split(',').map(str::to_string).collect()), ok }
}

/// The values every knob is tried with: its bounds, just outside them, and the wrong type.
fn cases(knob: &Knob) -> Vec<Case> {
    let f = |x: f64| format!("{x:?}");
    match knob.range {
        Range::Int { min, max } => {
            // Whole numbers the combined checks also take (see `base`): at most 8 steps, a stream batch of up to 8
            // at 1 step.
            let mut v = vec![
                case(&min.to_string(), json!(min), Some(&min.to_string()), true),
                case(&max.to_string(), json!(max), Some(&max.to_string()), true),
                case(&(min - 1).to_string(), json!(min - 1), Some(&(min - 1).to_string()), false),
                case("\"many\"", json!("many"), Some("many"), false),
            ];
            if max < i64::MAX {
                v.push(case(&(max + 1).to_string(), json!(max + 1), Some(&(max + 1).to_string()), false));
            }
            v
        }
        Range::Float { min, max } => vec![
            case(&f(min), json!(min), Some(&f(min)), true),
            case(&f(max), json!(max), Some(&f(max)), true),
            case(&f(min - 0.001), json!(min - 0.001), Some(&f(min - 0.001)), false),
            case(&f(max + 0.001), json!(max + 0.001), Some(&f(max + 0.001)), false),
            case("\"lots\"", json!("lots"), Some("lots"), false),
        ],
        Range::IntList { min, max } => vec![
            case(&format!("[{max}]"), json!([max]), Some(&max.to_string()), true),
            case(&format!("[{max}, {min}]"), json!([max, min]), Some(&format!("{max},{min}")), true),
            case(&format!("[{}]", max + 1), json!([max + 1]), Some(&(max + 1).to_string()), false),
            case(&format!("[{}]", min - 1), json!([min - 1]), Some(&(min - 1).to_string()), false),
            case("\"999\"", json!("999"), None, false),
        ],
        Range::Choice(words) => {
            let mut v: Vec<Case> = words.iter().map(|w| case(&format!("{w:?}"), json!(w), Some(w), true)).collect();
            v.push(case("\"sideways\"", json!("sideways"), Some("sideways"), false));
            v.push(case("3", json!(3), Some("3"), false));
            v
        }
        Range::Bool => vec![
            case("true", json!(true), Some("true"), true),
            case("false", json!(false), Some("false"), true),
            case("\"yes\"", json!("yes"), Some("yes"), false),
        ],
        Range::Text => vec![
            case("\"a watercolor fox\"", json!("a watercolor fox"), Some("a watercolor fox"), true),
            case("[1, 2]", json!([1, 2]), None, false),
        ],
        // Sizes are multiples of the model's 16 as well (the size policy's own check): bounds that are.
        Range::Size { max, .. } => vec![
            case("[16, 16]", json!([16, 16]), Some("16x16"), true),
            case(&format!("[{max}, 16]"), json!([max, 16]), Some(&format!("{max}x16")), true),
            case(&format!("[{}, 16]", max + 16), json!([max + 16, 16]), Some(&format!("{}x16", max + 16)), false),
            case("[0, 16]", json!([0, 16]), Some("0x16"), false),
        ],
    }
}

/// A pipeline every knob can be set in: pose-guided (a ControlNet model and the committed tiny DWPose), 1 step
/// (so a stream batch up to 8 is a frame batch), img2img (so feedback applies). The `mask.*` knobs are tried in a
/// masked pipeline instead (a mask with pose guidance is refused), whose mask file serves every source.
fn base(knob: &Knob) -> String {
    let (model, guide) = if knob.key.starts_with("mask.") {
        let mask =
            format!("[mask]\nfile = \"{f}\"\nalso = \"faces\"\nalso-file = \"{f}\"\n", f = mask_file().display());
        ("tiny-sd15-lcm-lora", mask)
    } else {
        let pose = format!("[pose]\nmode = \"img2img\"\nmodel = \"{}\"\n", common::model_dir("tiny-dwpose").display());
        ("tiny-sd15-lcm-lora-controlnet", pose)
    };
    format!(
        r#"mode = "offline"
[source]
kind = "test-pattern"
[model]
dir = "{model}"
size = [64, 64]
[params]
steps = 1
[engine]
{guide}[[sink]]
kind = "null"
"#,
        model = common::model_dir(model).display(),
    )
}

/// A mask image (a committed golden mask).
fn mask_file() -> std::path::PathBuf {
    common::golden("mask/camera_general.png")
}

/// `key = value` written into the base pipeline's text, in its table (replacing the table's own).
fn file_with(knob: &Knob, toml: &str) -> String {
    let key = knob.key;
    let (table, name) = key.split_once('.').unwrap();
    let header = format!("[{table}]");
    let mut out = Vec::new();
    let mut inside = false;
    for line in base(knob).lines() {
        if line.starts_with('[') {
            inside = line == header;
            out.push(line.to_string());
            if inside {
                out.push(format!("{name} = {toml}"));
            }
        } else if !(inside && line.starts_with(&format!("{name} ="))) {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

/// What one entry point said: accepted, or refused with this message.
type Verdict = Result<(), String>;

fn through_file(knob: &Knob, c: &Case) -> Verdict {
    Pipeline::parse_str(&file_with(knob, &c.toml), Path::new("p.toml"), &[]).map(drop).map_err(|e| e.chain_text())
}

fn through_set(knob: &Knob, c: &Case) -> Verdict {
    let set = format!("{}={}", knob.key, c.toml);
    Pipeline::parse_str(&base(knob), Path::new("p.toml"), &[set]).map(drop).map_err(|e| e.chain_text())
}

/// `latentcam convert` with the flag: the values are checked before the input is opened (exit code 2).
fn through_flag(flag: &str, values: &[String]) -> Verdict {
    let tmp = common::temp_dir();
    let input = tmp.path().join("in.mp4");
    std::fs::write(&input, b"never opened: the flags are checked first").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let mut args =
        vec!["--ep".to_string(), "cpu".into(), "convert".into(), path(&input), path(&tmp.path().join("o.mp4"))];
    if knobs::find(flag).is_some_and(|k| k.key.starts_with("mask.")) {
        // A masked conversion; its mask file serves every source (`--mask image`, `--mask video`).
        args.extend(["--model".into(), path(&common::model_dir("tiny-sd15-lcm-lora"))]);
        args.extend(["--mask-file".into(), path(&mask_file())]);
        if flag != "--mask" {
            args.extend(["--mask".into(), "segmenter".into()]);
        }
        if flag == "--mask-combine" {
            args.extend(["--mask-also".into(), "faces".into()]);
        }
        if flag == "--mask-also" {
            args.extend(["--mask-also-file".into(), path(&mask_file())]);
        }
    } else {
        args.extend(["--model".into(), path(&common::model_dir("tiny-sd15-lcm-lora-controlnet"))]);
        args.extend(["--pose-model".into(), path(&common::model_dir("tiny-dwpose"))]);
        if flag != "--pose" {
            args.extend(["--pose".into(), "img2img".into()]);
        }
    }
    // One step (a stream batch up to 8 is then a frame batch), unless the flag is part of the schedule.
    if !["--steps", "--timesteps", "--strength"].contains(&flag) {
        args.extend(["--steps".into(), "1".into()]);
    }
    args.push(flag.to_string());
    args.extend(values.iter().cloned());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentcam")).args(&args).env("RUST_LOG", "error").output();
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or(&err).to_string();
    match out.status.code() {
        // Every check passed; what failed is opening the input, which is no video.
        Some(2) if line.contains("in.mp4") && !line.contains(flag) => Ok(()),
        Some(2) => Err(line),
        code => panic!("{flag} {values:?}: exit {code:?}: {err}"),
    }
}

/// A hub with every live value present (pose-guided, a window), as a running pipeline has it.
fn hub() -> Arc<ControlHub> {
    let params = common::sample_params();
    let mask = latentcam::mask::PipelineMask { spec: Default::default(), enabled: true, composite: true };
    let values = LiveValues::new(&params, 10, 0.0, 0.01, Some((1.0, SmoothingSettings::default())), Some(View::Output))
        .with_mask(&mask);
    let limits = common::sample_limits();
    Arc::new(ControlHub::new(values, limits))
}

fn through_http(name: &str, c: &Case) -> Verdict {
    let hub = hub();
    let server = latentcam::control::http::serve(hub, "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let body = json!({ name: c.json }).to_string();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    let request = format!(
        "POST /params HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n{body}",
        server.local_addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap_or("").to_string();
    let json: Value = reply.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    match status.as_str() {
        "200" => Ok(()),
        "400" => Err(json["error"].as_str().unwrap_or("").to_string()),
        other => panic!("{name}: HTTP {other}: {reply}"),
    }
}

/// What the calling thread logs at WARN while `f` runs.
fn warnings(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

fn osc_args(value: &Value) -> Vec<rosc::OscType> {
    use rosc::OscType;
    match value {
        Value::Bool(b) => vec![OscType::Bool(*b)],
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(i) => vec![OscType::Int(i)],
                Err(_) => vec![OscType::Long(i)],
            },
            None => vec![OscType::Double(n.as_f64().unwrap())],
        },
        Value::String(s) => vec![OscType::String(s.clone())],
        // A list as an OSC array (one value in a list is a list, not the value).
        Value::Array(items) => {
            vec![OscType::Array(rosc::OscArray { content: items.iter().flat_map(osc_args).collect() })]
        }
        _ => vec![],
    }
}

fn through_osc(name: &str, c: &Case) -> Verdict {
    let hub = hub();
    let packet =
        rosc::OscPacket::Message(rosc::OscMessage { addr: format!("/latentcam/{name}"), args: osc_args(&c.json) });
    let bytes = rosc::encoder::encode(&packet).unwrap();
    let mut applied = 0;
    let logged = warnings(|| applied = latentcam::control::osc::handle_packet(&hub, &bytes));
    if applied > 0 { Ok(()) } else { Err(logged) }
}

fn through_stdin(name: &str, c: &Case) -> Verdict {
    hub().apply_line(&format!("{name}={}", c.toml)).map(drop)
}

/// One verdict against the declaration: accepted when it takes the value; else refused, naming the knob's bounds.
fn assert_verdict(knob: &Knob, c: &Case, entry: &str, verdict: Verdict) {
    match (c.ok, verdict) {
        (true, Ok(())) => {}
        (true, Err(e)) => panic!("{} = {} through {entry}: refused: {e}", knob.key, c.toml),
        (false, Ok(())) => panic!("{} = {} through {entry}: accepted", knob.key, c.toml),
        (false, Err(e)) => assert!(
            e.contains(&knob.expected()),
            "{} = {} through {entry}: the message does not give the bounds `{}`: {e}",
            knob.key,
            c.toml,
            knob.expected()
        ),
    }
}

#[test]
fn every_knob_gets_one_verdict_and_one_message_everywhere() {
    let mut tried = 0;
    for knob in knobs::ALL {
        for c in cases(knob) {
            if knob.key != "window.view" {
                assert_verdict(knob, &c, "the file", through_file(knob, &c));
                assert_verdict(knob, &c, "--set", through_set(knob, &c));
                tried += 2;
            }
            if let (Some(flag), Some(args)) = (knob.flag, &c.flag)
                // A prompt flag is text whatever is typed.
                && knob.range != Range::Text
            {
                assert_verdict(knob, &c, flag, through_flag(flag, args));
                tried += 1;
            }
            if let Some(name) = knob.live {
                assert_verdict(knob, &c, "HTTP", through_http(name, &c));
                assert_verdict(knob, &c, "OSC", through_osc(name, &c));
                assert_verdict(knob, &c, "stdin", through_stdin(name, &c));
                tried += 3;
            }
        }
    }
    eprintln!("{tried} verdicts, every one the declaration's");
}

#[test]
fn the_readme_parameters_table_is_the_declarations() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let table = knobs::readme_table();
    assert!(
        readme.contains(&table),
        "README.md's Parameters table differs from the knobs' declarations (src/knobs.rs); it should read:\n{table}"
    );
}
