//! OSC over UDP: `/latentcam/<param> value`.
//!
//! `<param>` is any spelling [`super::values::canonical`] takes (`prompt`, `negative_prompt`, `steps`, ...). One
//! argument is the value (string, int, float, double, bool; nil for none); several arguments, or an OSC array,
//! make a list (`/latentcam/timesteps 999 499`). Floats are read as their shortest decimal, so `0.7f` is 0.7, and
//! a float with no fraction is a whole number (`/latentcam/steps 2.0`). The messages of a bundle (at any depth)
//! are applied together, as one change. A message or value that cannot be used is ignored and logged at warn,
//! naming it (a datagram that does not decode: its size and the decoder's error, never its bytes), at most one
//! warning a second (a peer can send thousands of bad datagrams; the next warning counts those left out).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rosc::{OscMessage, OscPacket, OscType};
use serde_json::Value;

use super::values::show;
use super::{ControlHub, Throttle};
use crate::config::values::{SHOWN_CHARS, preview};
use crate::error::{Error, Result};

/// The address prefix of every message.
pub const PREFIX: &str = "/latentcam/";
/// Bundles and arrays nested deeper than this are refused (before decoding, which recurses).
pub const MAX_NESTING: usize = 16;
/// How often the receiving thread looks whether the server is stopping.
const POLL: Duration = Duration::from_millis(100);

/// A running OSC server; dropping it stops it.
pub struct OscServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OscServer {
    /// The address it listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OscServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listen on `addr` (UDP; port 0: any free port) and apply what arrives to `hub` until the server is dropped.
pub fn serve(hub: Arc<ControlHub>, addr: SocketAddr) -> Result<OscServer> {
    let listen_error = |e: std::io::Error| super::http::listen_failed("udp", addr, e);
    let socket = UdpSocket::bind(addr).map_err(listen_error)?;
    socket.set_read_timeout(Some(POLL)).map_err(listen_error)?;
    let addr = socket.local_addr().map_err(listen_error)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("control osc".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut throttle = Throttle::per_second();
            while !stopping.load(Ordering::SeqCst) {
                match socket.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        tracing::trace!(%peer, bytes = n, "OSC datagram");
                        handle_datagram(&hub, &buf[..n], peer, &mut throttle, Instant::now());
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => {
                        // ICMP errors surface here on some systems; nothing to do but go on.
                        tracing::debug!("control: OSC receive failed: {e}");
                        std::thread::sleep(POLL);
                    }
                }
            }
        })
        .map_err(|e| Error::internal("control OSC thread", e))?;
    tracing::info!("control: OSC on udp://{addr} (/latentcam/<param> value)");
    Ok(OscServer { addr, stop, thread: Some(thread) })
}

/// Apply one datagram to `hub`: its messages, all of a bundle's as one change. Returns how many values it set
/// (0 when nothing could be used; the reason is logged at warn, every time: the server's own loop throttles).
pub fn handle_packet(hub: &ControlHub, bytes: &[u8]) -> usize {
    let outcome = apply_packet(hub, bytes);
    if let Some(problem) = &outcome.problem {
        tracing::warn!("control: {problem}");
    }
    outcome.applied
}

/// [`handle_packet`] for a datagram from `peer`, warning at most as often as `throttle` lets it.
fn handle_datagram(hub: &ControlHub, bytes: &[u8], peer: SocketAddr, throttle: &mut Throttle, now: Instant) {
    let outcome = apply_packet(hub, bytes);
    let Some(problem) = outcome.problem else { return };
    match throttle.allow(now) {
        Some(0) => tracing::warn!("control: OSC from {peer}: {problem}"),
        Some(n) => tracing::warn!("control: OSC from {peer}: {problem} ({n} more bad OSC packets suppressed)"),
        None => tracing::trace!("control: OSC from {peer}: {problem}"),
    }
}

/// What a datagram did: how many values it set, and what in it was ignored (one line, bounded).
struct Outcome {
    applied: usize,
    problem: Option<String>,
}

/// The problems of one datagram that are named; the others are counted.
const NAMED_PROBLEMS: usize = 3;

fn apply_packet(hub: &ControlHub, bytes: &[u8]) -> Outcome {
    let ignored = |problem: String| Outcome { applied: 0, problem: Some(problem) };
    if let Err(e) = nesting(bytes) {
        return ignored(format!("ignoring a packet of {} bytes: {e}", bytes.len()));
    }
    let packet = match rosc::decoder::decode_udp(bytes) {
        Ok((_, packet)) => packet,
        // The error's text, never its Debug form: that carries the packet's bytes (a string that is not UTF-8).
        Err(e) => return ignored(format!("ignoring a packet of {} bytes that does not decode: {e}", bytes.len())),
    };
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    collect(&packet, &mut changes, &mut problems);
    let problem = (!problems.is_empty()).then(|| {
        let mut named: Vec<String> = problems.iter().take(NAMED_PROBLEMS).cloned().collect();
        if problems.len() > NAMED_PROBLEMS {
            named.push(format!("and {} more", problems.len() - NAMED_PROBLEMS));
        }
        format!("ignoring {}", named.join("; "))
    });
    if changes.is_empty() {
        return Outcome { applied: 0, problem };
    }
    match hub.apply(&changes) {
        Ok(_) => Outcome { applied: changes.len(), problem },
        Err(e) => {
            let mut what: Vec<String> =
                changes.iter().take(NAMED_PROBLEMS).map(|(k, v)| format!("{PREFIX}{k} {}", show(v))).collect();
            if changes.len() > NAMED_PROBLEMS {
                what.push(format!("and {} more", changes.len() - NAMED_PROBLEMS));
            }
            let rejected = format!("ignoring {}: {e}", what.join(", "));
            ignored(match problem {
                Some(p) => format!("{rejected}; {p}"),
                None => rejected,
            })
        }
    }
}

/// The changes in `packet` that can be used, and why the others cannot.
fn collect(packet: &OscPacket, changes: &mut Vec<(String, Value)>, problems: &mut Vec<String>) {
    match packet {
        OscPacket::Message(message) => match change(message) {
            Ok(c) => changes.push(c),
            Err(e) => problems.push(format!("{}: {e}", shorten(&message.addr))),
        },
        OscPacket::Bundle(bundle) => {
            for packet in &bundle.content {
                collect(packet, changes, problems);
            }
        }
    }
}

/// A message as the change it asks for.
fn change(message: &OscMessage) -> std::result::Result<(String, Value), String> {
    let param = message
        .addr
        .strip_prefix(PREFIX)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("expected the address {PREFIX}<param> (e.g. {PREFIX}prompt)"))?;
    let shown = preview(param, SHOWN_CHARS);
    let value = match message.args.as_slice() {
        [] => return Err(format!("{shown}: no value (send one argument, e.g. {PREFIX}{shown} 1.0)")),
        [one] => json(one),
        many => many.iter().map(json).collect::<std::result::Result<Vec<_>, _>>().map(Value::Array),
    }
    .map_err(|e| format!("{shown}: {e}"))?;
    Ok((param.to_string(), value))
}

/// An OSC argument as JSON.
fn json(arg: &OscType) -> std::result::Result<Value, String> {
    let number = |n: Option<serde_json::Number>, shown: String| {
        n.map(Value::Number).ok_or_else(|| format!("{shown} is not a finite number"))
    };
    Ok(match arg {
        OscType::Int(i) => Value::from(*i),
        OscType::Long(i) => Value::from(*i),
        // The shortest decimal that reads back as this f32: 0.7f is 0.7, not 0.699999988.
        OscType::Float(f) => {
            number(f.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64), f.to_string())?
        }
        OscType::Double(d) => number(serde_json::Number::from_f64(*d), crate::config::values::show_f64(*d))?,
        OscType::String(s) => Value::String(s.clone()),
        OscType::Char(c) => Value::String(c.to_string()),
        OscType::Bool(b) => Value::Bool(*b),
        OscType::Nil => Value::Null,
        OscType::Array(array) => Value::Array(array.content.iter().map(json).collect::<std::result::Result<_, _>>()?),
        other => {
            return Err(format!("an argument of type {} is not a value (send a number, string or bool)", kind(other)));
        }
    })
}

fn kind(arg: &OscType) -> &'static str {
    match arg {
        OscType::Blob(_) => "blob",
        OscType::Time(_) => "time tag",
        OscType::Color(_) => "color",
        OscType::Midi(_) => "MIDI",
        OscType::Inf => "infinitum",
        _ => "other",
    }
}

fn shorten(text: &str) -> String {
    preview(text, SHOWN_CHARS)
}

/// Refuse packets nested past [`MAX_NESTING`] (bundles in bundles, arrays in arrays) without recursing: the
/// decoder recurses into bundles, and a datagram holds thousands of levels.
fn nesting(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut pending: Vec<(&[u8], usize)> = vec![(bytes, 1)];
    while let Some((packet, depth)) = pending.pop() {
        if depth > MAX_NESTING {
            return Err(format!("bundles nested over {MAX_NESTING} deep"));
        }
        if let Some(mut rest) = packet.strip_prefix(b"#bundle\0".as_slice()) {
            rest = rest.get(8..).unwrap_or_default(); // the time tag
            while let Some((size, after)) = rest.split_first_chunk::<4>() {
                let size = u32::from_be_bytes(*size) as usize;
                let Some(element) = after.get(..size) else { break };
                pending.push((element, depth + 1));
                rest = &after[size..];
            }
        } else if packet.first() == Some(&b'/') {
            // The address, padded to four bytes, then the type tags: count how deep their brackets go.
            let Some(end) = packet.iter().position(|b| *b == 0) else { continue };
            let tags = packet.get((end + 4) & !3..).unwrap_or_default();
            let tags = &tags[..tags.iter().position(|b| *b == 0).unwrap_or(tags.len())];
            let mut open = 0usize;
            for tag in tags {
                match tag {
                    b'[' => open += 1,
                    b']' => open = open.saturating_sub(1),
                    _ => {}
                }
                if open > MAX_NESTING {
                    return Err(format!("arrays nested over {MAX_NESTING} deep"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(addr: &str, args: Vec<OscType>) -> Vec<u8> {
        rosc::encoder::encode(&OscPacket::Message(OscMessage { addr: addr.into(), args })).unwrap()
    }

    #[test]
    fn arguments_become_json() {
        let m = |args| OscMessage { addr: "/latentcam/steps".into(), args };
        assert_eq!(change(&m(vec![OscType::Float(2.0)])).unwrap(), ("steps".into(), Value::from(2.0)));
        assert_eq!(change(&m(vec![OscType::Float(0.7)])).unwrap().1, Value::from(0.7));
        assert_eq!(change(&m(vec![OscType::Int(999), OscType::Long(499)])).unwrap().1, serde_json::json!([999, 499]));
        assert!(change(&m(vec![])).unwrap_err().contains("no value"));
        assert!(change(&m(vec![OscType::Float(f32::NAN)])).unwrap_err().contains("not a finite number"));
        assert!(change(&m(vec![OscType::Blob(vec![1])])).unwrap_err().contains("blob"));
        let other = OscMessage { addr: "/other/steps".into(), args: vec![OscType::Int(1)] };
        assert!(change(&other).unwrap_err().contains("/latentcam/<param>"));
    }

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        let mut packet = message("/latentcam/prompt", vec![OscType::String("a fox".into())]);
        assert!(nesting(&packet).is_ok());
        for _ in 0..MAX_NESTING {
            let mut bundle = b"#bundle\0".to_vec();
            bundle.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
            bundle.extend_from_slice(&(packet.len() as u32).to_be_bytes());
            bundle.extend_from_slice(&packet);
            packet = bundle;
        }
        assert!(nesting(&packet).unwrap_err().contains("bundles nested"));
        let mut tags = String::from(",");
        tags.extend(std::iter::repeat_n('[', 40));
        tags.extend(std::iter::repeat_n(']', 40));
        let mut raw = b"/latentcam/timesteps\0\0\0\0".to_vec();
        raw.extend_from_slice(tags.as_bytes());
        raw.resize((raw.len() + 4) & !3, 0);
        assert!(nesting(&raw).unwrap_err().contains("arrays nested"));
    }

    /// A message whose string argument is not UTF-8: rosc's error carries the bytes in its Debug form.
    fn not_utf8() -> Vec<u8> {
        let mut packet = message("/latentcam/prompt", vec![OscType::String("SECRET-TEXT-\u{e9}".into())]);
        let at = packet.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        packet[at] = 0xff;
        packet
    }

    #[test]
    fn a_bad_packet_is_logged_by_its_size_not_its_bytes() {
        let hub = crate::control::sample_hub();
        let packet = not_utf8();
        let logged = crate::control::capture_logs(|| assert_eq!(handle_packet(&hub, &packet), 0));
        assert!(
            logged.contains(&format!("ignoring a packet of {} bytes that does not decode", packet.len())),
            "{logged}"
        );
        assert!(logged.contains("utf-8"), "the decoder's error: {logged}");
        assert!(!logged.contains("SECRET") && !logged.contains("83, 69, 67"), "no bytes: {logged}");
        assert_eq!(logged.lines().count(), 1, "{logged}");
    }

    #[test]
    fn bad_packets_warn_once_a_second_with_the_peer_and_a_count() {
        let hub = crate::control::sample_hub();
        let packet = not_utf8();
        let peer: SocketAddr = "192.0.2.7:9000".parse().unwrap();
        let mut throttle = Throttle::per_second();
        let t0 = Instant::now();
        let logged = crate::control::capture_logs(|| {
            for i in 0..1000 {
                handle_datagram(&hub, &packet, peer, &mut throttle, t0 + Duration::from_micros(i));
            }
            handle_datagram(&hub, &packet, peer, &mut throttle, t0 + Duration::from_secs(1));
        });
        let warnings: Vec<&str> = logged.lines().filter(|l| l.contains(" WARN ")).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.contains("192.0.2.7:9000") && w.contains("bytes")), "{warnings:?}");
        assert!(warnings[1].contains("(999 more bad OSC packets suppressed)"), "{}", warnings[1]);
    }

    #[test]
    fn what_a_packet_carries_is_logged_bounded() {
        let hub = crate::control::sample_hub();
        let prompt = "p".repeat(60_000);
        // A valid prompt with a bad value in the same bundle: the change is refused, the prompt shown short.
        let bundle = OscPacket::Bundle(rosc::OscBundle {
            timetag: rosc::OscTime { seconds: 0, fractional: 1 },
            content: vec![
                OscPacket::Message(OscMessage {
                    addr: "/latentcam/prompt".into(),
                    args: vec![OscType::String(prompt)],
                }),
                OscPacket::Message(OscMessage { addr: "/latentcam/steps".into(), args: vec![OscType::Int(99)] }),
            ],
        });
        let bad_addresses: Vec<OscPacket> = (0..200)
            .map(|i| {
                OscPacket::Message(OscMessage { addr: format!("/latentcam/{}{i}", "q".repeat(500)), args: vec![] })
            })
            .collect();
        let many = OscPacket::Bundle(rosc::OscBundle {
            timetag: rosc::OscTime { seconds: 0, fractional: 1 },
            content: bad_addresses,
        });
        let logged = crate::control::capture_logs(|| {
            assert_eq!(handle_packet(&hub, &rosc::encoder::encode(&bundle).unwrap()), 0);
            assert_eq!(handle_packet(&hub, &rosc::encoder::encode(&many).unwrap()), 0);
        });
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 2, "one line per packet: {logged}");
        assert!(
            lines[0].contains("(60000 chars)") && lines[0].contains("steps: 99: expected a whole number from 1 to 8"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("and 197 more"), "{}", lines[1]);
        assert!(lines.iter().all(|l| l.len() < 1000), "{logged}");
    }
}
