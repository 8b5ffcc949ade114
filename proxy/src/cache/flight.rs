//! Coalescing of misses: concurrent misses for one key make one upstream request.
//!
//! The first miss for a key leads (fetches and stores); later misses follow and wait for the
//! leader's outcome on a `watch` channel. The map of fills in flight is only touched on a miss.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// The fills in flight for one cache, by key hash.
#[derive(Debug, Default, Clone)]
pub struct Flights {
    in_flight: Arc<Mutex<HashMap<u64, watch::Receiver<Progress>>>>,
}

/// A miss's role in the fill of its key.
#[derive(Debug)]
pub enum Flight {
    /// First miss: fetch from an instance, store, then [`LeaderGuard::finish`].
    Leader(LeaderGuard),
    /// A fill is already in flight: wait for it.
    Follower(Follower),
}

/// What a follower learned about the fill it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The leader stored the response: look the key up again.
    Stored,
    /// The leader stored nothing (not storable, failed, or gone): fetch on your own.
    NotStored,
    /// The leader took longer than the follower's timeout.
    TimedOut,
}

/// The leader's duty to report its fill's outcome; dropping it without [`finish`](Self::finish)
/// reports `NotStored` so followers never wait for a failed fill.
#[derive(Debug)]
pub struct LeaderGuard {
    key: u64,
    progress: watch::Sender<Progress>,
    flights: Flights,
}

/// A miss waiting for another request's fill of the same key.
#[derive(Debug)]
pub struct Follower {
    progress: watch::Receiver<Progress>,
}

/// A fill's state as followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Pending,
    Done(bool),
}

// === impl Flights ===

impl Flights {
    /// Joins the fill of the key with hash `key`: leads it when none is in flight.
    pub fn join(&self, key: u64) -> Flight {
        let mut in_flight = self.lock();
        if let Some(progress) = in_flight.get(&key) {
            return Flight::Follower(Follower {
                progress: progress.clone(),
            });
        }
        let (sender, receiver) = watch::channel(Progress::Pending);
        in_flight.insert(key, receiver);
        Flight::Leader(LeaderGuard {
            key,
            progress: sender,
            flights: self.clone(),
        })
    }

    /// Fills in flight now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no fill is in flight.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, watch::Receiver<Progress>>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl LeaderGuard ===

impl LeaderGuard {
    /// Reports the fill's outcome (`stored`: the response is in the cache) and releases the
    /// followers.
    pub fn finish(self, stored: bool) {
        self.release(stored);
    }

    fn release(&self, stored: bool) {
        self.progress.send_replace(Progress::Done(stored));
        let mut in_flight = self.flights.lock();
        let ours = in_flight
            .get(&self.key)
            .is_some_and(|progress| progress.same_channel(&self.progress.subscribe()));
        if ours {
            in_flight.remove(&self.key);
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if *self.progress.borrow() == Progress::Pending {
            self.release(false);
        }
    }
}

// === impl Follower ===

impl Follower {
    /// Waits up to `timeout` for the leader's outcome.
    pub async fn wait(mut self, timeout: Duration) -> Outcome {
        let done = self.progress.wait_for(|p| *p != Progress::Pending);
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(progress)) => match *progress {
                Progress::Done(true) => Outcome::Stored,
                Progress::Done(false) | Progress::Pending => Outcome::NotStored,
            },
            // The leader vanished without a word (it cannot: its drop reports); not stored.
            Ok(Err(_)) => Outcome::NotStored,
            Err(_) => Outcome::TimedOut,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn one_leader_many_followers_all_released() {
        let flights = Flights::default();
        let mut leaders = Vec::new();
        let mut followers = Vec::new();
        for _ in 0..100 {
            match flights.join(7) {
                Flight::Leader(leader) => leaders.push(leader),
                Flight::Follower(follower) => followers.push(tokio::spawn(follower.wait(WAIT))),
            }
        }
        assert_eq!((leaders.len(), followers.len()), (1, 99));
        assert_eq!(flights.len(), 1);
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        leaders.pop().unwrap().finish(true);
        for follower in followers {
            assert_eq!(follower.await.unwrap(), Outcome::Stored);
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "released at once");
        assert!(flights.is_empty(), "a finished flight leaves the map");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_joins_from_tasks_elect_one_leader() {
        let flights = Flights::default();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let flights = flights.clone();
                tokio::spawn(async move {
                    match flights.join(1) {
                        Flight::Leader(leader) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            leader.finish(true);
                            None
                        }
                        Flight::Follower(follower) => Some(follower.wait(WAIT).await),
                    }
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|o| o.is_none()).count(), 1);
        assert!(outcomes.iter().flatten().all(|o| *o == Outcome::Stored));
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_leader_releases_followers_with_not_stored() {
        let flights = Flights::default();
        let Flight::Leader(leader) = flights.join(3) else {
            panic!("first join leads");
        };
        let Flight::Follower(follower) = flights.join(3) else {
            panic!("second join follows");
        };
        let waiting = tokio::spawn(follower.wait(WAIT));
        let start = tokio::time::Instant::now();
        drop(leader);
        assert_eq!(waiting.await.unwrap(), Outcome::NotStored);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn leader_finishing_not_stored() {
        let flights = Flights::default();
        let Flight::Leader(leader) = flights.join(3) else {
            panic!("first join leads");
        };
        let Flight::Follower(follower) = flights.join(3) else {
            panic!("second join follows");
        };
        leader.finish(false);
        assert_eq!(follower.wait(WAIT).await, Outcome::NotStored);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_time_out() {
        let flights = Flights::default();
        let Flight::Leader(_leader) = flights.join(9) else {
            panic!("first join leads");
        };
        let Flight::Follower(follower) = flights.join(9) else {
            panic!("second join follows");
        };
        let start = tokio::time::Instant::now();
        assert_eq!(
            follower.wait(Duration::from_millis(250)).await,
            Outcome::TimedOut
        );
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(flights.len(), 1, "the leader still leads");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_joining_after_the_outcome_sees_it() {
        let flights = Flights::default();
        let Flight::Leader(leader) = flights.join(5) else {
            panic!("first join leads");
        };
        let Flight::Follower(follower) = flights.join(5) else {
            panic!("second join follows");
        };
        leader.finish(true);
        assert_eq!(follower.wait(Duration::ZERO).await, Outcome::Stored);
        assert!(
            matches!(flights.join(5), Flight::Leader(_)),
            "the next miss leads again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keys_fly_separately() {
        let flights = Flights::default();
        let a = flights.join(1);
        let b = flights.join(2);
        assert!(matches!((&a, &b), (Flight::Leader(_), Flight::Leader(_))));
        assert_eq!(flights.len(), 2);
        drop((a, b));
        assert!(flights.is_empty());
    }
}
