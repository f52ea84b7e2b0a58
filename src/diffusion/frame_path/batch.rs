//! How frames share UNet batches (`[engine] stream-batch`), and what each way keeps between frames.

/// Largest stream batch accepted.
pub const MAX_STREAM_BATCH: usize = crate::knobs::STREAM_BATCH.int_bounds().1 as usize;

/// How frames share UNet batches (`[engine] stream-batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// One frame at a time; its steps run one after another.
    Single,
    /// k consecutive frames in one batch, 1 step: outputs come k at a time, k-1 frames late.
    Frames(usize),
    /// StreamDiffusion's denoising batch for n steps: n-1 frames late.
    Denoising(usize),
}

impl BatchMode {
    /// The mode for `stream_batch` frames and `steps` steps; the error says what is allowed.
    pub fn choose(stream_batch: usize, steps: usize) -> std::result::Result<BatchMode, String> {
        if stream_batch == 0 || stream_batch > MAX_STREAM_BATCH {
            return Err(format!("{stream_batch} (expected 1 to {MAX_STREAM_BATCH})"));
        }
        match (stream_batch, steps) {
            (1, _) | (_, 0) => Ok(BatchMode::Single),
            (k, 1) => Ok(BatchMode::Frames(k)),
            (k, n) if k == n => Ok(BatchMode::Denoising(n)),
            (k, n) => Err(format!(
                "{k} with {n} steps (with more than one step the stream batch is the denoising batch: 1 or {n})"
            )),
        }
    }

    /// Items in one UNet run (before classifier-free guidance doubles them).
    pub fn items(self) -> usize {
        match self {
            BatchMode::Single => 1,
            BatchMode::Frames(k) | BatchMode::Denoising(k) => k,
        }
    }

    /// Frames that go in per run (k for a frame batch; a denoising batch takes one frame per run).
    pub fn slots(self) -> usize {
        match self {
            BatchMode::Frames(k) => k,
            BatchMode::Single | BatchMode::Denoising(_) => 1,
        }
    }

    /// Frames held back before the first output.
    pub fn lag_frames(self) -> usize {
        match self {
            BatchMode::Single => 0,
            BatchMode::Frames(k) | BatchMode::Denoising(k) => k - 1,
        }
    }
}

/// A stream batch in progress: each mode holds only its own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Batching {
    /// One frame per run, out at once.
    Single,
    /// `filled` of `k` slots written since the last run.
    Frames { k: usize, filled: usize },
    /// Frames pushed since the stream (re)started, up to `n` (from then on every run finishes a frame).
    Denoising { n: usize, entered: usize },
}

/// What a frame just written to its slot sets off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pushed {
    /// Run the chain now.
    pub run: bool,
    /// Outputs the run finishes (rows of the output buffer, oldest first).
    pub emit: usize,
}

/// What the end of a stream leaves to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Drain {
    Nothing,
    /// A partial frame batch: slots `filled..k` are padded with the last frame, one run, `filled` outputs.
    Pad {
        filled: usize,
        k: usize,
    },
    /// A denoising batch: `runs` more runs move it on, one output each (the last frame fills in behind).
    Flush {
        runs: usize,
    },
}

impl Batching {
    /// An empty batch for `mode`.
    pub fn new(mode: BatchMode) -> Batching {
        match mode {
            BatchMode::Single => Batching::Single,
            BatchMode::Frames(k) => Batching::Frames { k, filled: 0 },
            BatchMode::Denoising(n) => Batching::Denoising { n, entered: 0 },
        }
    }

    pub fn mode(self) -> BatchMode {
        match self {
            Batching::Single => BatchMode::Single,
            Batching::Frames { k, .. } => BatchMode::Frames(k),
            Batching::Denoising { n, .. } => BatchMode::Denoising(n),
        }
    }

    /// The input slot the next frame is written to.
    pub fn slot(self) -> usize {
        match self {
            Batching::Frames { filled, .. } => filled,
            Batching::Single | Batching::Denoising { .. } => 0,
        }
    }

    /// A frame was written to [`Batching::slot`]: count it and say what to run.
    pub fn push(&mut self) -> Pushed {
        match self {
            Batching::Single => Pushed { run: true, emit: 1 },
            Batching::Frames { k, filled } => {
                *filled += 1;
                if *filled < *k {
                    return Pushed { run: false, emit: 0 };
                }
                *filled = 0;
                Pushed { run: true, emit: *k }
            }
            Batching::Denoising { n, entered } => {
                *entered = (*entered + 1).min(*n);
                Pushed { run: true, emit: usize::from(*entered == *n) }
            }
        }
    }

    /// End of stream: what is left to run; the batch is empty afterwards.
    pub fn drain(&mut self) -> Drain {
        let drain = match *self {
            Batching::Single | Batching::Frames { filled: 0, .. } => Drain::Nothing,
            Batching::Frames { k, filled } => Drain::Pad { filled, k },
            Batching::Denoising { n, entered } => Drain::Flush { runs: entered.min(n - 1) },
        };
        self.restart();
        drain
    }

    /// Start the stream empty.
    pub fn restart(&mut self) {
        *self = Batching::new(self.mode());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_modes_follow_steps() {
        assert_eq!(BatchMode::choose(1, 4), Ok(BatchMode::Single));
        assert_eq!(BatchMode::choose(4, 1), Ok(BatchMode::Frames(4)));
        assert_eq!(BatchMode::choose(3, 3), Ok(BatchMode::Denoising(3)));
        assert!(BatchMode::choose(2, 3).unwrap_err().contains("1 or 3"));
        assert!(BatchMode::choose(0, 1).unwrap_err().contains("1 to 8"));
        assert!(BatchMode::choose(9, 1).unwrap_err().contains("1 to 8"));
        assert_eq!(BatchMode::Frames(4).lag_frames(), 3);
        assert_eq!(BatchMode::Denoising(2).lag_frames(), 1);
        assert_eq!(BatchMode::Single.lag_frames(), 0);
    }

    #[test]
    fn each_batching_counts_its_own_way() {
        let mut frames = Batching::new(BatchMode::Frames(3));
        let slots: Vec<(usize, Pushed)> = (0..4).map(|_| (frames.slot(), frames.push())).collect();
        let wait = Pushed { run: false, emit: 0 };
        assert_eq!(slots, [(0, wait), (1, wait), (2, Pushed { run: true, emit: 3 }), (0, wait)]);
        assert_eq!(frames.drain(), Drain::Pad { filled: 1, k: 3 });
        assert_eq!(frames.drain(), Drain::Nothing, "drained: empty");

        let mut denoising = Batching::new(BatchMode::Denoising(3));
        let emitted: Vec<usize> = (0..5).map(|_| denoising.push().emit).collect();
        assert_eq!(emitted, [0, 0, 1, 1, 1]);
        assert_eq!(denoising.drain(), Drain::Flush { runs: 2 });
        denoising.push();
        assert_eq!(denoising.drain(), Drain::Flush { runs: 1 }, "one frame in: one run finishes it");

        let mut single = Batching::new(BatchMode::Single);
        assert_eq!(single.push(), Pushed { run: true, emit: 1 });
        assert_eq!(single.drain(), Drain::Nothing);
    }
}
