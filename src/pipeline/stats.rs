//! Pipeline statistics: frames in and out, time per stage, drops per link, and capture-to-sink latency.
//!
//! Stages record as they go (a mutex per record, a few per frame: negligible next to a model run); a reporter
//! logs a snapshot periodically and the engine prints the final one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::link::LinkCounters;

/// Latency samples kept for percentiles (the most recent ones; a long live run does not grow memory).
const LATENCY_WINDOW: usize = 4096;

#[derive(Default)]
struct StageAcc {
    count: u64,
    total_ms: f64,
    max_ms: f64,
}

pub struct Stats {
    started: Instant,
    captured: AtomicU64,
    delivered: Mutex<BTreeMap<String, u64>>,
    stages: Mutex<BTreeMap<&'static str, StageAcc>>,
    latency_ms: Mutex<Vec<f64>>,
    latency_next: AtomicU64,
    /// The first delivered frame's capture-to-sink latency: what a user waits for the first picture.
    first_latency_ms: std::sync::OnceLock<f64>,
    links: Mutex<Vec<Arc<LinkCounters>>>,
    model: std::sync::OnceLock<ModelSummary>,
}

/// The model a run uses, in its statistics (`--stats-json`, the control endpoint).
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub name: String,
    /// `sd` or `sdxl`.
    pub family: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageSnapshot {
    pub stage: &'static str,
    pub frames: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinkSnapshot {
    pub link: String,
    pub sent: u64,
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub frames_captured: u64,
    /// Frames delivered per sink.
    pub frames_delivered: BTreeMap<String, u64>,
    pub capture_fps: f64,
    pub output_fps: f64,
    pub stages: Vec<StageSnapshot>,
    pub links: Vec<LinkSnapshot>,
    pub dropped_total: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// The first frame's latency (the models were warmed up before the source started).
    pub first_frame_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSummary>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            captured: AtomicU64::new(0),
            delivered: Mutex::default(),
            stages: Mutex::default(),
            latency_ms: Mutex::new(Vec::with_capacity(LATENCY_WINDOW)),
            latency_next: AtomicU64::new(0),
            first_latency_ms: std::sync::OnceLock::new(),
            links: Mutex::default(),
            model: std::sync::OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stats {
    pub fn add_link(&self, counters: Arc<LinkCounters>) {
        lock(&self.links).push(counters);
    }

    pub fn captured(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stage(&self, stage: &'static str, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1e3;
        let mut stages = lock(&self.stages);
        let acc = stages.entry(stage).or_default();
        acc.count += 1;
        acc.total_ms += ms;
        acc.max_ms = acc.max_ms.max(ms);
    }

    /// A sink finished writing a frame captured at `captured`.
    pub fn delivered(&self, sink: &str, captured: Instant) {
        let ms = captured.elapsed().as_secs_f64() * 1e3;
        let _ = self.first_latency_ms.set(ms);
        *lock(&self.delivered).entry(sink.to_string()).or_default() += 1;
        let slot = self.latency_next.fetch_add(1, Ordering::Relaxed) as usize % LATENCY_WINDOW;
        let mut samples = lock(&self.latency_ms);
        if samples.len() < LATENCY_WINDOW {
            samples.push(ms);
        } else {
            samples[slot] = ms;
        }
    }

    /// Name the run's model (once; later calls are ignored).
    pub fn set_model(&self, model: ModelSummary) {
        let _ = self.model.set(model);
    }

    pub fn snapshot(&self) -> Snapshot {
        let elapsed_s = self.started.elapsed().as_secs_f64().max(1e-9);
        let frames_captured = self.captured.load(Ordering::Relaxed);
        let frames_delivered = lock(&self.delivered).clone();
        let most_delivered = frames_delivered.values().copied().max().unwrap_or(0);
        let stages = lock(&self.stages)
            .iter()
            .map(|(stage, acc)| StageSnapshot {
                stage,
                frames: acc.count,
                mean_ms: if acc.count > 0 { acc.total_ms / acc.count as f64 } else { 0.0 },
                max_ms: acc.max_ms,
            })
            .collect();
        let links: Vec<LinkSnapshot> = lock(&self.links)
            .iter()
            .map(|l| LinkSnapshot { link: l.name.clone(), sent: l.sent(), dropped: l.dropped() })
            .collect();
        let mut latencies = lock(&self.latency_ms).clone();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
        };
        Snapshot {
            elapsed_s,
            frames_captured,
            capture_fps: frames_captured as f64 / elapsed_s,
            output_fps: most_delivered as f64 / elapsed_s,
            frames_delivered,
            stages,
            dropped_total: links.iter().map(|l| l.dropped).sum(),
            links,
            latency_p50_ms: pct(0.5),
            latency_p95_ms: pct(0.95),
            latency_max_ms: latencies.last().copied(),
            first_frame_latency_ms: self.first_latency_ms.get().copied(),
            model: self.model.get().cloned(),
        }
    }
}

impl Snapshot {
    /// One log line.
    pub fn line(&self) -> String {
        let stages: Vec<String> = self.stages.iter().map(|s| format!("{} {:.1} ms", s.stage, s.mean_ms)).collect();
        let latency = match (self.latency_p50_ms, self.latency_p95_ms) {
            (Some(p50), Some(p95)) => format!(
                "latency p50 {p50:.0} ms p95 {p95:.0} ms first {:.0} ms",
                self.first_frame_latency_ms.unwrap_or(f64::NAN)
            ),
            _ => "latency -".into(),
        };
        format!(
            "{:.1} s: captured {} ({:.1} fps), delivered {}, out {:.1} fps, {}, dropped {}; {}",
            self.elapsed_s,
            self.frames_captured,
            self.capture_fps,
            self.frames_delivered.values().copied().max().unwrap_or(0),
            self.output_fps,
            latency,
            self.dropped_total,
            stages.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let stats = Stats::default();
        for _ in 0..10 {
            stats.captured();
        }
        let now = Instant::now();
        for i in 0..100u64 {
            stats.delivered("null", now - Duration::from_millis(i));
        }
        stats.stage("diffusion", Duration::from_millis(20));
        stats.stage("diffusion", Duration::from_millis(40));
        let s = stats.snapshot();
        assert_eq!(s.frames_captured, 10);
        assert_eq!(s.frames_delivered["null"], 100);
        let p50 = s.latency_p50_ms.unwrap();
        assert!((45.0..60.0).contains(&p50), "{p50}");
        assert!(s.latency_p95_ms.unwrap() >= 90.0);
        assert_eq!(s.stages[0].frames, 2);
        assert!((s.stages[0].mean_ms - 30.0).abs() < 1e-9);
        // The first delivery (captured "now", so about 0 ms) is the first frame's latency, whatever came after.
        assert!(s.first_frame_latency_ms.unwrap() < 5.0, "{:?}", s.first_frame_latency_ms);
    }
}
