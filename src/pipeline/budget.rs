//! The run's thread tokens, shared by the executor and the running stages.
//!
//! The executor starts a stage with a share of the free tokens (its base). A stage whose work
//! comes in many short parallel calls (a fit's minibatches, through
//! [`StageContext::install_elastic`](super::stage::StageContext::install_elastic)) also
//! *borrows* the tokens that sit idle while no stage waits to start, and gives them back at its
//! next call once one does. So the last fit of a sweep runs on every core instead of the one
//! it started with, and a stage that becomes ready still starts within one minibatch. Only
//! stages whose results do not depend on their thread count may borrow (a fit's are the same
//! bits on any number of threads).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Free tokens, stages waiting for them, and what each running stage has borrowed.
pub struct ThreadBudget {
    state: Mutex<State>,
    /// Called after a stage gave tokens back (wakes the executor to start a waiting stage).
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Stages ready to run that have not started (the executor keeps this current).
    waiting: usize,
    /// Tokens borrowed, per stage index.
    lent: BTreeMap<usize, usize>,
}

impl std::fmt::Debug for ThreadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadBudget")
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl ThreadBudget {
    /// `total` tokens, all free; `wake` is called whenever a stage gives borrowed ones back.
    pub fn new(total: usize, wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
            wake: Box::new(wake),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent counts (every update is
        // one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Free tokens now.
    pub fn free(&self) -> usize {
        self.lock().free
    }

    /// The executor: how many ready stages wait to start.
    pub fn set_waiting(&self, waiting: usize) {
        self.lock().waiting = waiting;
    }

    /// The executor: takes `n` tokens to start a stage with (at most the free ones).
    pub fn take(&self, n: usize) -> usize {
        let mut s = self.lock();
        let n = n.min(s.free);
        s.free -= n;
        n
    }

    /// The executor: stage `stage` ended; its `base` tokens and whatever it borrowed are free.
    pub fn release(&self, stage: usize, base: usize) {
        let mut s = self.lock();
        let lent = s.lent.remove(&stage).unwrap_or(0);
        s.free += base + lent;
    }

    /// A running stage with `base` tokens, before a parallel call: borrows every free token
    /// while no stage waits, gives its borrowed ones back when one does. Returns the threads to
    /// use now.
    pub fn rebalance(&self, stage: usize, base: usize) -> usize {
        let gave_back = {
            let mut s = self.lock();
            let lent = s.lent.get(&stage).copied().unwrap_or(0);
            if s.waiting > 0 {
                s.free += lent;
                s.lent.remove(&stage);
                lent
            } else {
                let more = s.free;
                s.free = 0;
                if lent + more > 0 {
                    s.lent.insert(stage, lent + more);
                }
                return base + lent + more;
            }
        };
        if gave_back > 0 {
            (self.wake)();
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn idle_tokens_are_borrowed_and_given_back_when_a_stage_waits() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let b = ThreadBudget::new(4, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        // Two stages start with two tokens each; nothing is free to borrow.
        assert_eq!(b.take(2), 2);
        assert_eq!(b.take(2), 2);
        assert_eq!(b.rebalance(0, 2), 2);
        // Stage 1 ends: stage 0 borrows its two while nothing waits.
        b.release(1, 2);
        assert_eq!(b.rebalance(0, 2), 4);
        assert_eq!(b.free(), 0);
        assert_eq!(b.rebalance(0, 2), 4, "keeps what it borrowed");
        // A stage becomes ready: the borrowed tokens go back, and the executor is woken.
        b.set_waiting(1);
        assert_eq!(b.rebalance(0, 2), 2);
        assert_eq!(b.free(), 2);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(b.rebalance(0, 2), 2, "nothing more to give back");
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // The executor starts it; later stage 0 borrows again once nothing waits, and its
        // end frees its base and what it borrowed.
        assert_eq!(b.take(2), 2);
        b.set_waiting(0);
        b.release(2, 2);
        assert_eq!(b.rebalance(0, 2), 4);
        b.release(0, 2);
        assert_eq!(b.free(), 4);
        // Never more than the free tokens.
        assert_eq!(b.take(9), 4);
    }
}
