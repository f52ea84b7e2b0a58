//! Starting the live-control inputs a pipeline asks for, and keeping them alive while it runs.

use std::io::BufRead;
use std::sync::Arc;

use super::ControlHub;
use crate::config::control::ControlSpec;
use crate::error::Result;

/// The hub and the inputs feeding it; the inputs stop when this is dropped (at the end of the run).
pub struct LiveControl {
    pub hub: Arc<ControlHub>,
    /// Servers that stop on drop.
    _inputs: Vec<Box<dyn Send>>,
}

impl LiveControl {
    /// A hub without inputs of its own (the window's keys still reach it; tests drive it directly).
    pub fn bare(hub: Arc<ControlHub>) -> LiveControl {
        LiveControl { hub, _inputs: Vec::new() }
    }

    /// Start what `spec` asks for: HTTP + WebSocket, OSC, stdin lines.
    pub fn start(hub: Arc<ControlHub>, spec: &ControlSpec) -> Result<LiveControl> {
        let mut inputs: Vec<Box<dyn Send>> = Vec::new();
        if let Some(addr) = spec.http {
            let (token, view_token) = (spec.token.clone(), spec.view_token.clone());
            inputs.push(Box::new(super::http::serve_tokens(hub.clone(), addr, token, view_token)?));
        }
        if let Some(addr) = spec.osc {
            inputs.push(Box::new(super::osc::serve(hub.clone(), addr)?));
        }
        if spec.stdin {
            read_stdin(hub.clone())?;
        }
        Ok(LiveControl { hub, _inputs: inputs })
    }
}

/// `key=value` lines on stdin, as `--set` takes them (`params.prompt="a fox"`); `#` starts a comment. The
/// thread is left to end with the process: a read from a terminal cannot be interrupted.
fn read_stdin(hub: Arc<ControlHub>) -> Result<()> {
    std::thread::Builder::new()
        .name("stdin control".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line == "help" || line == "?" {
                    tracing::info!("live values: {}", super::shown_values(&hub.values_json()));
                    continue;
                }
                if let Err(e) = hub.apply_line(line) {
                    tracing::warn!("stdin: {e}");
                }
            }
        })
        .map(drop)
        .map_err(|e| crate::Error::internal("stdin control", e))
}
