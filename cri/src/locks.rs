//! Per-object ordering of requests: requests for the same pod or container
//! run one after another, in arrival order (tokio's mutex is fair); requests
//! for different objects never wait on each other. Entries are dropped when
//! nobody holds or waits for them, so the map stays as small as the set of
//! objects being worked on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<()>>;

#[derive(Debug, Default, Clone)]
pub struct KeyedLocks {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Holds the lock of one key until dropped. While a `lock` call waits, its
/// not-yet-acquired guard exists too, so a waiter that is cancelled still
/// removes an entry nobody else uses.
#[derive(Debug)]
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    slot: Option<Slot>,
    key: String,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl KeyedLocks {
    pub fn new() -> KeyedLocks {
        KeyedLocks::default()
    }

    /// Waits for, then takes, the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.entry(key.to_owned()).or_default().clone()
        };
        // Declared before the acquiring future, so dropped after it on cancellation.
        let mut held =
            KeyGuard { guard: None, slot: Some(slot.clone()), key: key.to_owned(), slots: self.slots.clone() };
        let acquire = slot.lock_owned();
        held.guard = Some(acquire.await);
        held
    }

    /// How many keys are held or waited for.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        self.slot.take();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds the slot: nobody holds or waits for this key.
        if slots.get(&self.key).is_some_and(|slot| Arc::strong_count(slot) == 1) {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_is_ordered_other_keys_are_not_blocked() {
        let locks = KeyedLocks::new();
        let a = locks.lock("pod-a").await;
        // A different key is free while pod-a is held.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock("pod-b")).await.expect("pod-b free");
        drop(b);
        // The same key waits, and waiters are served in order.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (locks, order) = (locks.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("pod-a").await;
                order.lock().unwrap().push(i);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(order.lock().unwrap().is_empty());
        drop(a);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert!(locks.is_empty(), "idle keys are dropped");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry() {
        let locks = KeyedLocks::new();
        let held = locks.lock("c1").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("c1").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert!(locks.is_empty(), "{} entries left", locks.len());
    }
}
