//! Value types a pipeline file or a flag parses into. Each can only hold a value that is usable where it is
//! used: a rate that is never zero, a working size whose sides are multiples of what the model needs, a
//! stream address that can exist.

use std::net::IpAddr;
use std::time::Duration;

use crate::frame::Fps;

/// Rates a source may run at: a frame every 100 s up to 240 frames per second.
pub const MIN_FPS: f64 = 0.01;
pub const MAX_FPS: f64 = 240.0;

/// A frame rate from a file or flag, in [`MIN_FPS`, `MAX_FPS`]: a number (`30`, `29.97`) or a fraction
/// (`"30000/1001"`).
pub fn parse_fps(value: &toml::Value) -> Result<Fps, String> {
    let expected = format!(
        "expected a rate from {} to {}, as a number or a fraction like \"30000/1001\"",
        show_f64(MIN_FPS),
        show_f64(MAX_FPS)
    );
    let fps = match value {
        toml::Value::Integer(n) => u32::try_from(*n).ok().and_then(|n| Fps::new(n, 1)),
        // The value as given must be in range, not only the fraction it rounds to (0.009999999 is not 1/100).
        toml::Value::Float(x) if (MIN_FPS..=MAX_FPS).contains(x) => Fps::from_f64(*x),
        toml::Value::String(text) => match text.split_once('/') {
            Some((n, d)) => match (n.trim().parse::<u32>(), d.trim().parse::<u32>()) {
                (Ok(n), Ok(d)) => Fps::new(n, d),
                _ => None,
            },
            None => text.trim().parse::<f64>().ok().filter(|x| (MIN_FPS..=MAX_FPS).contains(x)).and_then(Fps::from_f64),
        },
        _ => None,
    };
    match fps {
        Some(f) if (MIN_FPS..=MAX_FPS).contains(&f.as_f64()) => Ok(f),
        _ => Err(format!("{}: {expected}", show(value))),
    }
}

/// A value as a message shows it: floats in their shortest form (`1e-300`, not 300 digits), also inside arrays
/// and tables, and a long string or list cut to a preview.
pub fn show(value: &toml::Value) -> String {
    const MAX_ITEMS: usize = 8;
    match value {
        // A whole float keeps its point, as TOML writes it: `2.0 is float, expected ...`.
        toml::Value::Float(x) if x.is_finite() && x.fract() == 0.0 && show_f64(*x).parse::<i64>().is_ok() => {
            format!("{}.0", show_f64(*x))
        }
        toml::Value::Float(x) => show_f64(*x),
        toml::Value::String(s) => {
            let count = s.chars().count();
            let head = toml::Value::String(s.chars().take(SHOWN_CHARS).collect()).to_string();
            if count > SHOWN_CHARS { format!("{head}… ({count} chars)") } else { head }
        }
        toml::Value::Array(items) => {
            let mut shown: Vec<String> = items.iter().take(MAX_ITEMS).map(show).collect();
            if items.len() > MAX_ITEMS {
                shown.push(format!("… ({} entries)", items.len()));
            }
            format!("[{}]", shown.join(", "))
        }
        toml::Value::Table(table) => {
            let mut shown: Vec<String> =
                table.iter().take(MAX_ITEMS).map(|(k, v)| format!("{k} = {}", show(v))).collect();
            if table.len() > MAX_ITEMS {
                shown.push(format!("… ({} keys)", table.len()));
            }
            format!("{{ {} }}", shown.join(", "))
        }
        other => other.to_string(),
    }
}

/// How messages show numbers and users' text: declared with the knobs (the ground floor), used everywhere.
pub use crate::knobs::{SHOWN_CHARS, preview, show_f64};

/// Seconds from a file or flag as a `Duration`, within `min..=max`.
pub fn parse_seconds(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{}: expected seconds from {} to {}", show_f64(value), show_f64(min), show_f64(max)))
    }
}

/// An integer from a file or flag, within `min..=max`, as the type it is used as.
pub fn parse_int<T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Result<T, String> {
    if (min..=max).contains(&value) {
        T::try_from(value).map_err(|_| format!("{value}: expected {min} to {max}"))
    } else {
        Err(format!("{value}: expected {min} to {max}"))
    }
}

/// The largest side of a working (model) size. Real SD UNets are trained at 512-1024; 4096 leaves room.
pub const MAX_WORKING_SIDE: u32 = crate::knobs::SIZE.int_bounds().1 as u32;
/// Sides a source may deliver.
pub const MIN_SOURCE_SIDE: u32 = 8;
pub const MAX_SOURCE_SIDE: u32 = 8192;

/// Prompt transitions (`params.transition-frames`): the knob's bound.
pub const MAX_TRANSITION_FRAMES: u32 = crate::knobs::TRANSITION_FRAMES.int_bounds().1 as u32;
/// Latent feedback (`params.feedback`): at most this fraction of the last output (1 would freeze the picture).
pub const MAX_FEEDBACK: f64 = crate::knobs::FEEDBACK.float_bounds().1;

/// The size frames have when they reach the model: both sides positive multiples of `multiple` (what the
/// model and schedule need: see [`crate::model::ModelFolder::size_multiple_for`]), at most
/// [`MAX_WORKING_SIDE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkingSize {
    width: u32,
    height: u32,
    multiple: u32,
}

impl WorkingSize {
    pub fn new(width: u32, height: u32, multiple: u32) -> Result<WorkingSize, String> {
        let multiple = multiple.max(1);
        let fits = |side: u32| side > 0 && side <= MAX_WORKING_SIDE && side.is_multiple_of(multiple);
        if fits(width) && fits(height) {
            Ok(WorkingSize { width, height, multiple })
        } else {
            Err(format!(
                "{width}x{height}: sides must be multiples of {multiple} (what this model and schedule need), from \
                 {multiple} to {MAX_WORKING_SIDE}"
            ))
        }
    }

    /// The largest size with such sides inside `width`×`height` (the crop policy for a source's size).
    pub fn crop_of(width: u32, height: u32, multiple: u32) -> Result<WorkingSize, String> {
        let multiple = multiple.max(1);
        let down = |side: u32| side.min(MAX_WORKING_SIDE) / multiple * multiple;
        WorkingSize::new(down(width), down(height), multiple).map_err(|_| {
            format!("{width}x{height} is smaller than the model's minimum {multiple}x{multiple}; set a working size")
        })
    }

    pub fn width(self) -> u32 {
        self.width
    }
    pub fn height(self) -> u32 {
        self.height
    }
    pub fn multiple(self) -> u32 {
        self.multiple
    }
    pub fn dims(self) -> (u32, u32) {
        (self.width, self.height)
    }
}

impl std::fmt::Display for WorkingSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Where a stream sink sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamUrl {
    Udp {
        host: Host,
        port: u16,
    },
    /// `host` None = listen on every interface (OBS connects as caller).
    Srt {
        host: Option<Host>,
        port: u16,
    },
}

/// A host that can exist: an IP address, or a syntactically valid DNS name (resolved when the sink opens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl Host {
    pub fn parse(text: &str) -> Result<Host, String> {
        let bracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        if let Ok(ip) = bracketed.unwrap_or(text).parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        // A name whose last label is all digits is a mistyped address (999.1.1.1), not a name.
        let labels: Vec<&str> = text.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let numeric_tld = labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
        if text.len() <= 253 && labels.iter().all(label_ok) && !numeric_tld {
            Ok(Host::Name(text.to_ascii_lowercase()))
        } else {
            Err(format!("`{text}` is neither an IP address nor a host name"))
        }
    }
}

impl StreamUrl {
    pub fn parse(url: &str) -> Result<StreamUrl, String> {
        let expected = "expected udp://HOST:PORT or srt://HOST:PORT (srt://:PORT to listen)";
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}`: {expected}"))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("`{url}` has no port: {expected}"))?;
        let port: u16 =
            port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{url}`: bad port `{port}`: {expected}"))?;
        let host_of = |h: &str| Host::parse(h).map_err(|e| format!("`{url}`: {e}"));
        match scheme {
            "udp" if !host.is_empty() => Ok(StreamUrl::Udp { host: host_of(host)?, port }),
            "udp" => Err(format!("`{url}` needs a host: {expected}")),
            "srt" if host.is_empty() => Ok(StreamUrl::Srt { host: None, port }),
            "srt" => Ok(StreamUrl::Srt { host: Some(host_of(host)?), port }),
            _ => Err(format!("`{url}`: unknown scheme `{scheme}`: {expected}")),
        }
    }

    /// The host to connect to, if any (an SRT listener has none).
    pub fn host(&self) -> Option<&Host> {
        match self {
            StreamUrl::Udp { host, .. } => Some(host),
            StreamUrl::Srt { host, .. } => host.as_ref(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            StreamUrl::Udp { port, .. } | StreamUrl::Srt { port, .. } => *port,
        }
    }
}

impl std::fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bracket = |h: &Host| match h {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        };
        match self {
            StreamUrl::Udp { host, port } => write!(f, "udp://{}:{port}", bracket(host)),
            StreamUrl::Srt { host: None, port } => write!(f, "srt://:{port}"),
            StreamUrl::Srt { host: Some(h), port } => write!(f, "srt://{}:{port}", bracket(h)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls() {
        assert_eq!(
            StreamUrl::parse("udp://127.0.0.1:5000").unwrap(),
            StreamUrl::Udp { host: Host::Ip("127.0.0.1".parse().unwrap()), port: 5000 }
        );
        assert_eq!(StreamUrl::parse("srt://:9000").unwrap(), StreamUrl::Srt { host: None, port: 9000 });
        assert_eq!(
            StreamUrl::parse("udp://Studio-PC.local:5000").unwrap().host(),
            Some(&Host::Name("studio-pc.local".into()))
        );
        assert!(StreamUrl::parse("udp://[::1]:5000").is_ok());
        for bad in ["udp://:5000", "udp://h:0", "udp://999.1.1.1:5000", "udp://a b:5", "tcp://x:1", "udp://-x:1"] {
            assert!(StreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn working_sizes_carry_their_multiple() {
        let s = WorkingSize::new(512, 256, 64).unwrap();
        assert_eq!((s.dims(), s.multiple()), ((512, 256), 64));
        assert!(WorkingSize::new(500, 256, 64).is_err());
        assert!(WorkingSize::new(0, 256, 8).is_err());
        assert!(WorkingSize::new(8192, 256, 8).is_err());
        assert_eq!(WorkingSize::crop_of(451, 300, 64).unwrap().dims(), (448, 256));
        assert!(WorkingSize::crop_of(40, 300, 64).is_err());
    }

    #[test]
    fn rates_and_seconds() {
        use toml::Value;
        assert_eq!(parse_fps(&Value::String("30000/1001".into())).unwrap(), Fps::new(30000, 1001).unwrap());
        assert_eq!(parse_fps(&Value::Float(29.97)).unwrap(), Fps::new(30000, 1001).unwrap());
        for bad in
            [Value::Integer(0), Value::Integer(-5), Value::Float(1e-300), Value::Float(241.0), Value::Boolean(true)]
        {
            assert!(parse_fps(&bad).is_err(), "{bad:?}");
        }
        assert!(parse_seconds(f64::NAN, 0.0, 10.0).is_err());
        assert_eq!(parse_seconds(2.5, 0.0, 10.0).unwrap(), Duration::from_millis(2500));
        assert!(parse_int::<u32>(-1, 0, 50).is_err());
    }

    #[test]
    fn floats_are_shown_short() {
        assert_eq!(show_f64(1e-320), "1e-320");
        assert_eq!(show_f64(-1e300), "-1e300");
        assert_eq!(show_f64(1.0), "1");
        assert_eq!(show_f64(0.5), "0.5");
        assert_eq!(show_f64(29.97), "29.97");
        assert_eq!(show_f64(0.0), "0");
        assert_eq!(show_f64(f64::NAN), "NaN");
        assert_eq!(show_f64(f64::INFINITY), "inf");
        for x in [1e-320, 1e-300, 0.1 + 0.2, 1.0 / 3.0, 1e16, 123456789.125, f64::MIN_POSITIVE, f64::MAX] {
            assert_eq!(show_f64(x).parse::<f64>().unwrap(), x, "{x:?} reads back");
            assert!(show_f64(x).len() <= 24, "{}", show_f64(x));
        }
        use toml::Value;
        let list = Value::Array(vec![Value::Float(1e-300), Value::Integer(2)]);
        assert_eq!(show(&list), "[1e-300, 2]");
        assert_eq!(show(&Value::Float(2.0)), "2.0");
        assert_eq!(show(&Value::Float(-1e300)), "-1e300");
        let err = parse_fps(&list).unwrap_err();
        assert!(err.starts_with("[1e-300, 2]: expected a rate from 0.01 to 240"), "{err}");
        assert_eq!(parse_seconds(1e-320, 0.1, 10.0).unwrap_err(), "1e-320: expected seconds from 0.1 to 10");
        let long = show(&Value::String("x".repeat(1000)));
        assert!(long.len() < 100 && long.ends_with("(1000 chars)"), "{long}");
        assert_eq!(preview("a fox", 60), "a fox");
        assert_eq!(preview("abcdef", 3), "abc… (6 chars)");
    }
}
