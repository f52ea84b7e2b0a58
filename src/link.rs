//! Links: the bounded, named channels between pipeline threads, each with an overflow policy.
//!
//! - `Block`: a full link makes the sender wait. Offline work uses it: every frame arrives, none is dropped.
//! - `DropOldest`: a full link discards its oldest item to make room, and counts it. Live work uses it with
//!   capacity 1: the latest frame wins and no backlog (latency) can build up behind a slow stage.
//!
//! End of stream is the sender side being dropped: the receiver drains what is queued, then sees `None`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    Block,
    DropOldest,
}

/// Counters of one link, shared with the stats reporter.
#[derive(Debug)]
pub struct LinkCounters {
    pub name: String,
    pub capacity: usize,
    pub overflow: Overflow,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl LinkCounters {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The receiving side is gone: the item could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub struct Disconnected;

pub struct LinkSender<T> {
    tx: Sender<T>,
    /// DropOldest only: a handle to take the oldest item out of a full link.
    oldest: Option<Receiver<T>>,
    receiver_alive: Arc<AtomicBool>,
    counters: Arc<LinkCounters>,
}

pub struct LinkReceiver<T> {
    rx: Receiver<T>,
    alive: Arc<AtomicBool>,
    counters: Arc<LinkCounters>,
}

/// A new link of `capacity` (at least 1).
pub fn link<T>(name: impl Into<String>, capacity: usize, overflow: Overflow) -> (LinkSender<T>, LinkReceiver<T>) {
    let capacity = capacity.max(1);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let counters = Arc::new(LinkCounters {
        name: name.into(),
        capacity,
        overflow,
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let alive = Arc::new(AtomicBool::new(true));
    let oldest = (overflow == Overflow::DropOldest).then(|| rx.clone());
    (
        LinkSender { tx, oldest, receiver_alive: alive.clone(), counters: counters.clone() },
        LinkReceiver { rx, alive, counters },
    )
}

impl<T> LinkSender<T> {
    pub fn counters(&self) -> Arc<LinkCounters> {
        self.counters.clone()
    }

    /// Deliver `item` by the link's policy.
    pub fn send(&self, mut item: T) -> Result<(), Disconnected> {
        if !self.receiver_alive.load(Ordering::Acquire) {
            return Err(Disconnected);
        }
        match &self.oldest {
            None => self.tx.send(item).map_err(|_| Disconnected)?,
            Some(oldest) => loop {
                match self.tx.try_send(item) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        if oldest.try_recv().is_ok() {
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        item = back;
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(Disconnected),
                }
                if !self.receiver_alive.load(Ordering::Acquire) {
                    return Err(Disconnected);
                }
            },
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<T> LinkReceiver<T> {
    pub fn counters(&self) -> Arc<LinkCounters> {
        self.counters.clone()
    }

    /// The next item; `None` once every sender is gone and the link is drained.
    pub fn recv(&self) -> Option<T> {
        self.rx.recv().ok()
    }

    /// Like `recv`, but gives up after `timeout` (`Ok(None)`); `Err(())` at end of stream.
    #[allow(clippy::result_unit_err)]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
        match self.rx.recv_timeout(timeout) {
            Ok(item) => Ok(Some(item)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }
}

impl<T> Drop for LinkReceiver<T> {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        // Unblock a sender waiting on a full Block link.
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_the_latest_and_counts() {
        let (tx, rx) = link("t", 1, Overflow::DropOldest);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.recv(), Some(4));
        assert_eq!(tx.counters().dropped(), 4);
        assert_eq!(tx.counters().sent(), 5);
        drop(tx);
        assert_eq!(rx.recv(), None);
    }

    #[test]
    fn block_delivers_everything_in_order() {
        let (tx, rx) = link("t", 2, Overflow::Block);
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        let got: Vec<i32> = std::iter::from_fn(|| rx.recv()).collect();
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.counters().dropped(), 0);
    }

    #[test]
    fn sending_to_a_dropped_receiver_fails_for_both_policies() {
        for overflow in [Overflow::Block, Overflow::DropOldest] {
            let (tx, rx) = link::<u8>("t", 1, overflow);
            drop(rx);
            assert_eq!(tx.send(1), Err(Disconnected));
        }
    }
}
