//! The text encoder's own thread: a new prompt is encoded while frames keep running with the old one.
//!
//! The thread owns the text encoder's session (and its cache of recent prompts, so switching back to a prompt
//! costs nothing). The diffusion thread sends prompts and polls for embeddings between frames; it never waits.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::values::{SHOWN_CHARS, preview};
use crate::diffusion::text::{Embeddings, TextEncoder};
use crate::error::{Error, Result};
use crate::link::{LinkReceiver, LinkSender, Overflow, link};

/// Prompts waiting to be encoded: a user typing faster than the encoder loses the oldest, never the newest.
const QUEUED_PROMPTS: usize = 16;

/// A prompt and its embeddings (one row), or why it could not be encoded.
pub type Encoded = (String, Result<Arc<Embeddings>>);

pub struct PromptWorker {
    requests: Option<LinkSender<String>>,
    results: Option<LinkReceiver<Encoded>>,
    thread: Option<JoinHandle<()>>,
}

impl PromptWorker {
    /// Start the thread; it owns `encoder` until the worker is dropped.
    pub fn spawn(mut encoder: TextEncoder) -> Result<PromptWorker> {
        let (requests, inbox) = link::<String>("prompts->text encoder", QUEUED_PROMPTS, Overflow::DropOldest);
        let (outbox, results) = link::<Encoded>("text encoder->diffusion", QUEUED_PROMPTS, Overflow::Block);
        let thread = std::thread::Builder::new()
            .name("text encoder".into())
            .spawn(move || {
                while let Some(prompt) = inbox.recv() {
                    let started = std::time::Instant::now();
                    let result = encoder.encode(&prompt);
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::debug!(prompt = %preview(&prompt, SHOWN_CHARS), ms, "prompt encoded");
                    if outbox.send((prompt, result)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::internal("text encoder thread", e))?;
        Ok(PromptWorker { requests: Some(requests), results: Some(results), thread: Some(thread) })
    }

    /// Ask for `prompt`'s embeddings (returns at once).
    pub fn request(&self, prompt: &str) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(prompt.to_string());
        }
    }

    /// An encoded prompt, if one is ready; an error if the thread has ended (it panicked: a bug).
    pub fn try_next(&self) -> Result<Option<Encoded>> {
        self.next_within(Duration::ZERO)
    }

    /// Wait up to `timeout` for an encoded prompt.
    pub fn next_within(&self, timeout: Duration) -> Result<Option<Encoded>> {
        let ended = || Error::internal("text encoder thread", "it ended (a panic while encoding a prompt?)");
        match &self.results {
            Some(results) => results.recv_timeout(timeout).map_err(|()| ended()),
            None => Err(ended()),
        }
    }
}

impl Drop for PromptWorker {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after the prompt it is encoding; dropping the results first
        // means a thread blocked on a full result queue is released too.
        self.requests = None;
        self.results = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
