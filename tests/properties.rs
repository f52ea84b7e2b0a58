//! No panic from any input: pipeline files, `--set` values and command-line flags generated across and beyond
//! every range (huge, tiny, zero, negative, NaN, inf, empty strings, odd sizes, wrong types, unknown keys)
//! go through the library entry points (`Pipeline::parse_str`, the `jobs` requests). A value the README's
//! rules allow must pass; any other must fail with exit code 2 and a message naming the key or flag; nothing
//! may panic. The oracle below restates those rules independently of the parser.
//!
//! The knobs ([`latentcam::knobs`]) of `[params]` and `[engine]` are tested from their declarations: every one
//! is a key here, with its bounds and the values just outside them; the oracle restates the README's rules
//! for the values together (the schedule, the size multiple). Other keys: add them to `KEYS` and `valid`.

mod common;

use std::path::Path;

use latentcam::config::Pipeline;
use latentcam::jobs::{ConvertRequest, DiffusionRequest, Img2ImgRequest, ScheduleRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A value as a user might write it.
#[derive(Clone, Debug)]
enum Val {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Ints(Vec<i64>),
}

impl Val {
    /// As TOML source text.
    fn toml(&self) -> String {
        match self {
            Val::Int(n) => n.to_string(),
            Val::Float(x) if x.is_nan() => "nan".into(),
            Val::Float(x) if x.is_infinite() => if *x > 0.0 { "inf" } else { "-inf" }.into(),
            Val::Float(x) => format!("{x:?}"),
            Val::Str(s) => toml::Value::String(s.clone()).to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Ints(v) => format!("[{}]", v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The number, for keys that take any number (an integer is a number too).
    fn number(&self) -> Option<f64> {
        match self {
            Val::Int(n) => Some(*n as f64),
            Val::Float(x) => Some(*x),
            _ => None,
        }
    }
}

/// The keys under test, as `--set` spells them, against BASE.
const KEYS: &[&str] = &[
    "mode",
    "stats-interval-s",
    "source.kind",
    "source.width",
    "source.height",
    "source.fps",
    "source.frames",
    "source.framez",
    "model.size",
    "params.stepz",
    "control.http",
    "control.osc",
    "control.token",
    "control.osc-allow-remote",
    "control.stdin",
    "sink.0.path",
    "sink.0.quality",
    "sink.0.view",
    "sink.0.audio",
    "sink.1.url",
    "sink.1.bitrate-kbps",
    "sink.2.every",
    "sink.2.only-when",
    "bogus",
];

/// The keys under test: [`KEYS`] and every knob of `[params]` and `[engine]`, from the declarations.
fn all_keys() -> Vec<&'static str> {
    let knobs =
        latentcam::knobs::ALL.iter().map(|k| k.key).filter(|k| k.starts_with("params.") || k.starts_with("engine."));
    KEYS.iter().copied().chain(knobs).collect()
}

/// Each knob's bounds and the values just outside them, from the declarations.
fn knob_edges() -> Vec<Val> {
    use latentcam::knobs::Range;
    let mut edges = Vec::new();
    for knob in latentcam::knobs::ALL {
        match knob.range {
            Range::Int { min, max } => {
                edges.extend([min, max, min.saturating_sub(1), max.saturating_add(1)].map(Val::Int));
                edges.push(Val::Float(min as f64 + 0.5));
            }
            Range::Float { min, max } => {
                edges.extend([min, max, min - 1e-9, max + 1e-9, max * 2.0 + 1.0].map(Val::Float));
            }
            Range::IntList { min, max } => {
                edges.extend([vec![max], vec![max + 1], vec![min], vec![min - 1]].map(Val::Ints));
            }
            Range::Choice(words) => {
                edges.extend(words.iter().map(|w| Val::Str(w.to_string())));
                edges.push(Val::Str(format!("{}x", words[0])));
            }
            Range::Bool | Range::Text | Range::Size { .. } => {}
        }
    }
    edges
}

/// A valid pipeline on the committed tiny model (size multiple 16, 1000 training steps, grid step 20).
const BASE: &str = r#"
mode = "offline"
stats-interval-s = 5
[source]
kind = "test-pattern"
width = 64
height = 64
fps = 25
frames = 3
[model]
dir = "TINY"
size = [64, 64]
[params]
prompt = "a cat"
steps = 1
strength = 0.5
[engine]
cuda-graph = false
[control]
stdin = false
[[sink]]
kind = "file"
path = "out.mp4"
[[sink]]
kind = "stream"
url = "udp://127.0.0.1:5000"
[[sink]]
kind = "png"
dir = "frames"
"#;

const FPS_MIN: f64 = 0.01;

/// The README's rules for one key set to `v` in BASE.
fn valid(key: &str, v: &Val) -> bool {
    let int_in = |lo: i64, hi: i64| matches!(v, Val::Int(n) if (lo..=hi).contains(n));
    // A knob's whole number may be written with a zero fraction (`2.0`), as JSON and OSC tools send it.
    let whole_in = |lo: i64, hi: i64| match v {
        Val::Int(n) => (lo..=hi).contains(n),
        Val::Float(x) => x.fract() == 0.0 && *x >= lo as f64 && *x <= hi as f64,
        _ => false,
    };
    let number_in = |lo: f64, hi: f64| v.number().is_some_and(|x| x.is_finite() && x >= lo && x <= hi);
    match key {
        "mode" => matches!(v, Val::Str(s) if s == "live" || s == "offline"),
        "stats-interval-s" => number_in(0.0, 86_400.0),
        "source.kind" => matches!(v, Val::Str(s) if s == "test-pattern"),
        "source.width" | "source.height" => int_in(8, 8192),
        "source.fps" => match v {
            Val::Int(n) => (1..=240).contains(n),
            Val::Float(x) => x.is_finite() && *x >= FPS_MIN && *x <= 240.0,
            Val::Str(s) => match s.split_once('/') {
                Some((n, d)) => match (n.trim().parse::<u32>(), d.trim().parse::<u32>()) {
                    (Ok(n), Ok(d)) if n > 0 && d > 0 => (FPS_MIN..=240.0).contains(&(f64::from(n) / f64::from(d))),
                    _ => false,
                },
                None => s.trim().parse::<f64>().is_ok_and(|x| x.is_finite() && (FPS_MIN..=240.0).contains(&x)),
            },
            _ => false,
        },
        "source.frames" | "sink.2.every" => int_in(1, i64::MAX),
        "model.size" => {
            matches!(v, Val::Ints(s) if s.len() == 2 && s.iter().all(|&x| (16..=4096).contains(&x) && x % 16 == 0))
        }
        // Text; a number or true/false written bare is its text (`prompt = 1984`), a list is not.
        "params.prompt" | "params.negative-prompt" => !matches!(v, Val::Ints(_)),
        // Strength 0.5 keeps 25 of the 50 LCM grid points: any step count up to 8 fits.
        "params.steps" => whole_in(1, 8),
        // At least one grid point per step (1 step): strength >= 1/50, or exactly 0 (the VAE only).
        "params.strength" => v.number() == Some(0.0) || number_in(0.02, 1.0),
        "params.guidance" => number_in(0.0, 10.0),
        "params.seed" => whole_in(0, i64::MAX),
        "params.timesteps" => match v {
            Val::Ints(t) => {
                !t.is_empty()
                    && t.len() <= 8
                    && t.iter().all(|x| (0..=999).contains(x))
                    && t.windows(2).all(|w| w[1] < w[0])
            }
            _ => false,
        },
        // BASE runs 1 step: any stream batch from 1 to 8 is a frame batch.
        "engine.stream-batch" => whole_in(1, 8),
        "engine.cuda-graph" => matches!(v, Val::Bool(_)),
        "engine.similarity-threshold" => number_in(0.0, 1.0),
        "engine.similarity-max-skips" => whole_in(1, 600),
        "engine.tensorrt-fp16" => matches!(v, Val::Str(s) if ["auto", "on", "off"].contains(&s.as_str())),
        "sink.0.path" => matches!(v, Val::Str(s) if {
            let ext = Path::new(s).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            !s.trim().is_empty() && ["mp4", "mkv", "mov"].contains(&ext.as_str())
        }),
        "sink.0.quality" => int_in(0, 50),
        "sink.0.view" => matches!(v, Val::Str(s) if ["output", "input", "side-by-side", "pose"].contains(&s.as_str())),
        "sink.0.audio" => matches!(v, Val::Bool(_)),
        "sink.1.url" => matches!(v, Val::Str(s) if URLS.iter().any(|(u, ok)| u == s && *ok)),
        "sink.1.bitrate-kbps" => int_in(1, 2_048_000),
        "sink.2.only-when" => matches!(v, Val::Str(s) if s == "display" || s == "no-display"),
        "params.transition-frames" => whole_in(0, 300),
        "params.feedback" => number_in(0.0, 0.9),
        // BASE has no token: HTTP and OSC may only bind loopback addresses (IP:PORT or localhost:PORT).
        "control.http" | "control.osc" => matches!(v, Val::Str(s) if local_address(s)),
        "control.token" => {
            matches!(v, Val::Str(s) if !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_ascii_graphic()))
        }
        "control.osc-allow-remote" | "control.stdin" => matches!(v, Val::Bool(_)),
        _ => false, // unknown keys
    }
}

fn local_address(s: &str) -> bool {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => s.strip_prefix("localhost:").is_some_and(|p| p.parse::<u16>().is_ok()),
    }
}

/// Stream addresses with what the README says of them.
const URLS: &[(&str, bool)] = &[
    ("udp://127.0.0.1:5000", true),
    ("udp://studio-pc.local:5000", true),
    ("udp://[::1]:5000", true),
    ("srt://:9000", true),
    ("srt://10.0.0.2:9000", true),
    ("udp://999.1.1.1:5000", false),
    ("udp://:5000", false),
    ("udp://host:0", false),
    ("udp://host:65536", false),
    ("tcp://host:1", false),
    ("udp://a b:1", false),
    ("udp://-x:1", false),
    ("", false),
    ("udp://host", false),
];

fn edge_ints() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -1_000_000,
            -1,
            0,
            1,
            2,
            7,
            8,
            9,
            16,
            20,
            50,
            51,
            64,
            240,
            241,
            999,
            1000,
            4096,
            4097,
            8192,
            8193,
            2_048_000,
            2_048_001,
            u32::MAX as i64,
            i64::MAX,
        ]),
        any::<i64>(),
        -100i64..10_000,
    ]
}

fn edge_floats() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            1e-300,
            0.005,
            0.01,
            0.02,
            0.5,
            1.0,
            1.5,
            2.5,
            10.0,
            12.5,
            23.976,
            29.97,
            59.94,
            240.0,
            240.5,
            86_400.0,
            86_401.0,
            1e300,
            -1.0,
        ]),
        // Away from the rounding edges of rates (0.01 fps), so the oracle need not restate the rounding.
        0.02f64..239.9,
        -1e6f64..-0.001,
        241.0f64..1e12,
    ]
}

fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "live",
            "offline",
            "test-pattern",
            "webcam",
            "output",
            "side-by-side",
            "display",
            "no-display",
            "30000/1001",
            "0/0",
            "1/0",
            "0/1",
            "1/1000",
            "60",
            "29.97",
            "nan",
            "out.mp4",
            "out.MKV",
            "clip.mov",
            "x.avi",
            "noext",
            "a/b/c.mp4",
            "ünïcödé ✓",
            "\u{0}",
            "a\"b",
            "127.0.0.1:7860",
            "localhost:9000",
            "0.0.0.0:7860",
            "[::1]:9000",
            "192.168.1.5:9000",
            "127.0.0.1:99999",
            "s3cret-token",
        ])
        .prop_map(String::from),
        prop::sample::select(URLS.iter().map(|(u, _)| u.to_string()).collect::<Vec<_>>()),
        "\\PC{0,40}",
    ]
}

fn values() -> impl Strategy<Value = Val> {
    prop_oneof![
        3 => edge_ints().prop_map(Val::Int),
        3 => edge_floats().prop_map(Val::Float),
        3 => strings().prop_map(Val::Str),
        1 => any::<bool>().prop_map(Val::Bool),
        3 => prop::collection::vec(edge_ints(), 0..10).prop_map(Val::Ints),
        2 => prop::sample::select(vec![vec![999, 499], vec![999], vec![499, 999], vec![64, 64], vec![16, 4096], vec![0], vec![999, 759, 499, 259]]).prop_map(Val::Ints),
        3 => prop::sample::select(knob_edges()),
    ]
}

fn tiny() -> String {
    common::model_dir("tiny-sd-turbo").display().to_string()
}

/// Put `key = value` into BASE's text (replacing the key where BASE has it, else adding it to its table).
fn with_key_in_text(key: &str, v: &Val) -> String {
    let base = BASE.replace("TINY", &tiny());
    let parts: Vec<&str> = key.split('.').collect();
    let (table, name) = match parts.as_slice() {
        [name] => (None, *name),
        ["sink", i, name] => (Some(i.parse::<usize>().unwrap()), *name),
        [t, name] => return put_in_table(&base, &format!("[{t}]"), 0, name, v),
        _ => unreachable!(),
    };
    match table {
        None => {
            let kept: Vec<&str> = base.lines().filter(|l| !l.starts_with(&format!("{name} ="))).collect();
            format!("{name} = {}\n{}", v.toml(), kept.join("\n"))
        }
        Some(i) => put_in_table(&base, "[[sink]]", i, name, v),
    }
}

/// Set `name` in the `nth` table whose header is `header`.
fn put_in_table(text: &str, header: &str, nth: usize, name: &str, v: &Val) -> String {
    let mut out = Vec::new();
    let mut seen = 0;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line == header && {
                seen += 1;
                seen == nth + 1
            };
            out.push(line.to_string());
            if inside {
                out.push(format!("{name} = {}", v.toml()));
            }
            continue;
        }
        if inside && line.starts_with(&format!("{name} =")) {
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

/// The last part of a key, as a message names it (a wrong `kind` is reported for its table).
fn short(key: &str) -> &str {
    match key {
        "source.kind" => "source",
        _ => key.rsplit('.').next().unwrap_or(key),
    }
}

fn check_outcome(how: &str, key: &str, v: &Val, result: latentcam::Result<Pipeline>) -> Result<(), TestCaseError> {
    match (valid(key, v), result) {
        (true, Ok(_)) => Ok(()),
        (true, Err(e)) => {
            Err(TestCaseError::fail(format!("{how}: {key} = {} is valid, refused: {}", v.toml(), e.chain_text())))
        }
        (false, Ok(_)) => Err(TestCaseError::fail(format!("{how}: {key} = {} is invalid, accepted", v.toml()))),
        (false, Err(e)) => {
            let text = e.chain_text();
            prop_assert_eq!(e.exit_code(), 2, "{}: {} = {}: {}", how, key, v.toml(), text);
            prop_assert!(
                text.contains(short(key)),
                "{}: {} = {}: message does not name it: {}",
                how,
                key,
                v.toml(),
                text
            );
            Ok(())
        }
    }
}

fn runner(cases: u32) -> TestRunner {
    // Fixed seed: the same cases every run (CI), more with PROPTEST_CASES.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, ..Config::default() },
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    )
}

#[test]
fn base_pipeline_is_valid() {
    let text = BASE.replace("TINY", &tiny());
    Pipeline::parse_str(&text, Path::new("base.toml"), &[]).unwrap();
}

#[test]
fn pipeline_files_and_set_values_are_parsed_or_refused_never_panic() {
    let strategy = (prop::sample::select(all_keys()), values());
    runner(3000)
        .run(&strategy, |(key, v)| {
            // The same value through the file's text and through --set: both must agree with the rules.
            let text = with_key_in_text(key, &v);
            let in_file = Pipeline::parse_str(&text, Path::new("p.toml"), &[]);
            check_outcome("in the file", key, &v, in_file)?;
            let base = BASE.replace("TINY", &tiny());
            let set = format!("{key}={}", v.toml());
            let by_set = Pipeline::parse_str(&base, Path::new("p.toml"), &[set]);
            check_outcome("with --set", key, &v, by_set)
        })
        .unwrap();
}

#[test]
fn arbitrary_text_and_overrides_never_panic() {
    let strategy = ("\\PC{0,200}", prop::collection::vec("\\PC{0,30}", 0..4));
    runner(2000)
        .run(&strategy, |(text, sets)| {
            if let Err(e) = Pipeline::parse_str(&text, Path::new("p.toml"), &sets) {
                prop_assert_eq!(e.exit_code(), 2, "{}", e.chain_text());
            }
            let base = BASE.replace("TINY", &tiny());
            if let Err(e) = Pipeline::parse_str(&base, Path::new("p.toml"), &sets) {
                prop_assert_eq!(e.exit_code(), 2, "{}", e.chain_text());
            }
            Ok(())
        })
        .unwrap();
}

/// Flag values for `convert`, `img2img` and `schedule`.
#[derive(Clone, Debug)]
struct Flags {
    steps: Option<i64>,
    strength: Option<f64>,
    guidance: Option<f64>,
    seed: i64,
    timesteps: Option<Vec<i64>>,
    size: Option<String>,
    quality: i64,
}

fn flags() -> impl Strategy<Value = Flags> {
    let size = prop_oneof![
        Just(None),
        prop::sample::select(vec!["64x64", "64x48", "0x64", "64", "x", "4096x4096", "4112x64", "-64x64", "64X64", "a"])
            .prop_map(|s| Some(s.to_string())),
        (0u32..5000, 0u32..5000).prop_map(|(w, h)| Some(format!("{w}x{h}"))),
    ];
    (
        prop::option::of(edge_ints()),
        prop::option::of(edge_floats()),
        prop::option::of(edge_floats()),
        edge_ints(),
        prop::option::of(prop::collection::vec(edge_ints(), 0..5)),
        size,
        edge_ints(),
    )
        .prop_map(|(steps, strength, guidance, seed, timesteps, size, quality)| Flags {
            steps,
            strength,
            guidance,
            seed,
            timesteps,
            size,
            quality,
        })
}

/// The README's rules for the flags together (one bad flag fails the whole command).
fn flags_valid(f: &Flags) -> bool {
    let steps = f.steps.unwrap_or(2); // tiny-sd-turbo's default
    let strength = f.strength.unwrap_or(0.5);
    let schedule_ok = match &f.timesteps {
        Some(t) => {
            valid("params.timesteps", &Val::Ints(t.clone()))
                && f.steps.is_none_or(|s| (1..=8).contains(&s))
                && f.strength.is_none_or(|s| s.is_finite() && (0.0..=1.0).contains(&s))
        }
        None => {
            (1..=8).contains(&steps)
                && strength.is_finite()
                && (0.0..=1.0).contains(&strength)
                && (strength == 0.0 || (50.0 * strength).floor() as i64 >= steps)
        }
    };
    let vae_only = f.timesteps.is_none() && strength == 0.0;
    let multiple = if vae_only { 8 } else { 16 };
    let size_ok = match &f.size {
        None => true,
        Some(s) => match s.split_once(['x', 'X']) {
            Some((w, h)) => match (w.parse::<u32>(), h.parse::<u32>()) {
                (Ok(w), Ok(h)) => [w, h].iter().all(|&x| x > 0 && x <= 4096 && x % multiple == 0),
                _ => false,
            },
            None => false,
        },
    };
    schedule_ok
        && size_ok
        && f.guidance.is_none_or(|g| g.is_finite() && (0.0..=10.0).contains(&g))
        && f.seed >= 0
        && (0..=50).contains(&f.quality)
}

#[test]
fn command_line_flags_are_parsed_or_refused_never_panic() {
    let tmp = common::temp_dir();
    let input = tmp.path().join("in.mp4");
    std::fs::write(&input, b"not opened by the checks").unwrap();
    runner(1500)
        .run(&flags(), |f| {
            // As typed on a command line.
            let float = |x: f64| format!("{x:?}");
            let diffusion = DiffusionRequest {
                model: Some(common::model_dir("tiny-sd-turbo")),
                prompt: "a cat".into(),
                negative_prompt: String::new(),
                steps: f.steps.map(|s| s.to_string()),
                strength: f.strength.map(float),
                guidance: f.guidance.map(float),
                seed: Some(f.seed.to_string()),
                timesteps: f.timesteps.as_ref().map(|t| t.iter().map(i64::to_string).collect()),
            };
            let convert = ConvertRequest {
                input: input.clone(),
                output: tmp.path().join("out.mp4"),
                diffusion: diffusion.clone(),
                size: f.size.clone(),
                quality: f.quality,
                audio: true,
                engine: Default::default(),
                pose: None,
                feedback: None,
                mask: None,
            };
            let expected = flags_valid(&f);
            match convert.pipeline() {
                Ok(_) => prop_assert!(expected, "convert accepted invalid flags {:?}", f),
                Err(e) => {
                    prop_assert!(!expected, "convert refused valid flags {:?}: {}", f, e.chain_text());
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.chain_text().contains("--"), "names the flag: {}", e.chain_text());
                }
            }
            // img2img shares the diffusion flags and --size (no --quality).
            let img = Img2ImgRequest {
                input: input.clone(),
                output: tmp.path().join("out.png"),
                diffusion,
                size: f.size.clone(),
            };
            let expected = flags_valid(&Flags { quality: 21, ..f.clone() });
            match img.check() {
                Ok(_) => prop_assert!(expected, "img2img accepted invalid flags {:?}", f),
                Err(e) => {
                    prop_assert!(!expected, "img2img refused valid flags {:?}: {}", f, e.chain_text());
                    prop_assert_eq!(e.exit_code(), 2);
                }
            }
            let schedule = ScheduleRequest {
                steps: f.steps.unwrap_or(1).to_string(),
                strength: float(f.strength.unwrap_or(0.5)),
                timesteps: f.timesteps.as_ref().map(|t| t.iter().map(i64::to_string).collect()),
                model: None,
            };
            if let Err(e) = schedule.run() {
                prop_assert_eq!(e.exit_code(), 2, "{}", e.chain_text());
            }
            Ok(())
        })
        .unwrap();
}
