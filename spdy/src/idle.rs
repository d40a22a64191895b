//! An idle clock: when a connection last moved anything either way, and a
//! future that resolves once it has moved nothing for a given time. A
//! session keeps one (touched for every frame read or written) for
//! [`crate::Session::set_idle_timeout`]; the CRI server's WebSocket
//! transport keeps one per connection for the same timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Cheap to clone; all clones read and move the same clock.
#[derive(Debug, Clone)]
pub struct IdleClock {
    start: Instant,
    /// Milliseconds from `start` to the last activity.
    last: Arc<AtomicU64>,
}

impl Default for IdleClock {
    fn default() -> Self {
        IdleClock::new()
    }
}

impl IdleClock {
    /// A clock whose last activity is now.
    pub fn new() -> IdleClock {
        IdleClock { start: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    /// Records activity now (never moving the clock back, whichever of
    /// two concurrent touches lands last).
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has touched the clock for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last.checked_add(timeout).unwrap_or_else(|| last + Duration::from_secs(86400 * 365));
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn resolves_only_after_a_quiet_stretch() {
        let clock = IdleClock::new();
        let t0 = Instant::now();
        let toucher = {
            let clock = clock.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    clock.touch();
                }
            })
        };
        clock.idle_for(Duration::from_secs(1)).await;
        // Touched at 0.6 s … 3.0 s: quiet for 1 s from 3.0 s.
        assert_eq!(t0.elapsed().as_millis(), 4000);
        toucher.await.unwrap();
    }
}
