//! `[control]` checked: where a running pipeline listens for changes, and who may send them.
//!
//! HTTP and WebSocket bind 127.0.0.1 unless told otherwise; any other address needs a `token` (every request
//! then carries `Authorization: Bearer <token>`). OSC has no authentication at all, so a non-local OSC address
//! needs `osc-allow-remote = true`. Both refusals happen when the file is checked (`latentcam check`, exit 2).

use std::net::{Ipv4Addr, SocketAddr};

use super::file::ControlFile;
use super::{Mode, Origin};
use crate::error::Result;

/// Longest accepted token (it travels in a header).
const MAX_TOKEN_BYTES: usize = 256;
/// The window's number keys: 1 to 9.
const MAX_PRESETS: usize = 9;

/// `IP:PORT` (`[::1]:PORT` for IPv6) or `localhost:PORT`; no name lookup, so a check never waits on DNS. Port 0
/// picks a free port (the log says which).
pub fn parse_address(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    })
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlSpec {
    pub http: Option<SocketAddr>,
    pub osc: Option<SocketAddr>,
    pub token: Option<String>,
    /// Opens `/whep` (watching) and nothing else.
    pub view_token: Option<String>,
    /// `key=value` lines on stdin.
    pub stdin: bool,
    /// Prompts for the window's keys 1-9.
    pub presets: Vec<String>,
}

impl ControlSpec {
    pub fn parse(file: &ControlFile, mode: Mode, origin: &Origin) -> Result<ControlSpec> {
        let err = |key: &str, problem: String| origin.error(&format!("control.{key}"), problem);
        let address = |key: &str, text: &Option<String>| -> Result<Option<SocketAddr>> {
            let Some(text) = text else { return Ok(None) };
            parse_address(text).map(Some).ok_or_else(|| {
                err(key, format!("{text:?}: expected IP:PORT or localhost:PORT, e.g. \"127.0.0.1:7860\""))
            })
        };
        let token_of = |key: &str, given: &Option<String>| match given {
            Some(t) if t.is_empty() || t.len() > MAX_TOKEN_BYTES || t.chars().any(|c| !c.is_ascii_graphic()) => {
                Err(err(key, format!("expected 1 to {MAX_TOKEN_BYTES} printable ASCII characters without spaces")))
            }
            other => Ok(other.clone()),
        };
        let token = token_of("token", &file.token)?;
        let view_token = token_of("view-token", &file.view_token)?;
        if view_token.is_some() && view_token == token {
            return Err(err("view-token", "is the control token: a viewer could change the stream".into()));
        }
        let http = address("http", &file.http)?;
        if let Some(addr) = http
            && !addr.ip().is_loopback()
            && token.is_none()
        {
            return Err(err(
                "http",
                format!(
                    "{addr} is reachable from other machines: set control.token (clients then send \
                     `Authorization: Bearer <token>`), or bind 127.0.0.1"
                ),
            ));
        }
        let osc = address("osc", &file.osc)?;
        if let Some(addr) = osc
            && !addr.ip().is_loopback()
            && file.osc_allow_remote != Some(true)
        {
            return Err(err(
                "osc",
                format!(
                    "{addr} is reachable from other machines and OSC has no authentication: bind 127.0.0.1, or \
                     set control.osc-allow-remote = true on a trusted network"
                ),
            ));
        }
        let presets = file.presets.clone().unwrap_or_default();
        if presets.len() > MAX_PRESETS {
            return Err(err("presets", format!("{} prompts: the keys 1-9 take at most {MAX_PRESETS}", presets.len())));
        }
        Ok(ControlSpec { http, osc, token, view_token, stdin: file.stdin.unwrap_or(mode == Mode::Live), presets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: ControlFile) -> std::result::Result<ControlSpec, String> {
        ControlSpec::parse(&file, Mode::Live, &Origin::File("p.toml".into())).map_err(|e| e.to_string())
    }

    #[test]
    fn local_binds_need_nothing_else() {
        let spec = parse(ControlFile {
            http: Some("127.0.0.1:7860".into()),
            osc: Some("127.0.0.1:9000".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(spec.http.unwrap().port(), 7860);
        assert!(spec.stdin, "stdin control is on in live mode");
        let offline = ControlSpec::parse(&ControlFile::default(), Mode::Offline, &Origin::Flags).unwrap();
        assert!(!offline.stdin);
    }

    #[test]
    fn remote_binds_are_refused_without_protection() {
        let e = parse(ControlFile { http: Some("0.0.0.0:7860".into()), ..Default::default() }).unwrap_err();
        assert!(e.contains("control.http") && e.contains("control.token"), "{e}");
        parse(ControlFile { http: Some("0.0.0.0:7860".into()), token: Some("s3cret".into()), ..Default::default() })
            .unwrap();
        let e = parse(ControlFile { osc: Some("0.0.0.0:9000".into()), ..Default::default() }).unwrap_err();
        assert!(e.contains("osc-allow-remote"), "{e}");
        parse(ControlFile { osc: Some("0.0.0.0:9000".into()), osc_allow_remote: Some(true), ..Default::default() })
            .unwrap();
        let e = parse(ControlFile { token: Some("has space".into()), ..Default::default() }).unwrap_err();
        assert!(e.contains("control.token"), "{e}");
        let e = parse(ControlFile { http: Some("nowhere:80".into()), ..Default::default() }).unwrap_err();
        assert!(e.contains("IP:PORT"), "{e}");
        assert_eq!(parse_address("localhost:9000"), Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9000))));
        assert!(parse_address("[::1]:80").is_some_and(|a| a.ip().is_loopback()));
    }
}
