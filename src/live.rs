//! `Live<T>`: a value the daemon's tasks read at each piece of work and a reload replaces as a
//! whole (the composer, the matcher, the escalator's settings, the intake's context).
//!
//! Readers take an `Arc` of the current value and keep it for the piece of work, so a reload
//! never changes anything under a task mid-way. A lock poisoned by a panicking writer still
//! holds a whole value (the swap is one assignment), so it is used rather than propagated.

use std::sync::{Arc, RwLock};

/// A shared, replaceable value.
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(Arc::clone(&self.0))
    }
}

impl<T> Live<T> {
    /// A live value starting at `value`.
    pub fn new(value: impl Into<Arc<T>>) -> Live<T> {
        Live(Arc::new(RwLock::new(value.into())))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => Arc::clone(&v),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the value for every later `get`.
    pub fn set(&self, value: Arc<T>) {
        match self.0.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_its_value_across_a_replacement() {
        let live = Live::new(1);
        let held = live.get();
        live.clone().set(Arc::new(2));
        assert_eq!((*held, *live.get()), (1, 2));
    }
}
