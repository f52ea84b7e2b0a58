//! Discards frames: for benchmarks and tests (the engine still counts and times every delivery).

use super::{Sink, StreamEnd};
use crate::error::Result;
use crate::frame::Processed;

pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _frame: &Processed) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _end: StreamEnd) -> Result<()> {
        Ok(())
    }
}
