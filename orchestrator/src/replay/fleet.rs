//! A simulated fleet of one service at one-second resolution: instances ready a boot time after
//! they are ordered, a capacity per ready instance, and a FIFO queue with a deadline for the
//! requests beyond it.
//!
//! ```text
//!  order(desired) ─► pending (ready at t + boot) ─► ready ─► capacity = ready × per-instance
//!  arrivals(t) ─► queue (FIFO cohorts by second) ─► served this second, or wait, or expire
//!  billing: every ordered instance, pending or ready, every second until it is stopped
//! ```

use std::collections::VecDeque;

/// The shape of a simulated service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetShape {
    /// Seconds from order to ready (the shortest, when `boot_max_secs` is larger).
    pub boot_secs: u64,
    /// Longest boot: each instance's boot is drawn uniformly from `boot_secs..=boot_max_secs`.
    pub boot_max_secs: u64,
    /// Seed of the boot-time draws (the same seed replays the same run).
    pub seed: u64,
    /// Requests per second one ready instance serves.
    pub capacity: f64,
    /// Seconds a request waits at most before it counts as failed.
    pub deadline_secs: u64,
    /// Seconds at the start that are simulated but not measured (every policy starts from the
    /// same cold fleet and an empty history; what it does before it has seen any traffic says
    /// nothing about it): requests arriving and instance-seconds billed before then are not
    /// counted.
    pub warmup_secs: u64,
}

/// What a simulated fleet measured over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetStats {
    /// Requests that arrived.
    pub arrived: f64,
    /// Requests served in the second they arrived.
    pub served_at_once: f64,
    /// Requests served in a later second (they waited for capacity).
    pub waited: f64,
    /// Requests still queued when their deadline passed.
    pub past_deadline: f64,
    /// `waits[s]`: requests that waited `s` seconds (0 = served at once).
    pub waits: Vec<f64>,
    /// Instance-seconds billed (ordered instances, pending or ready).
    pub instance_seconds: f64,
    /// Ready instance-seconds whose capacity went unused.
    pub idle_instance_seconds: f64,
    /// Requests that arrived while no instance was ready (a cold start stood between them and
    /// any capacity).
    pub cold_starts: f64,
    /// Times the ordered count changed.
    pub scale_actions: u64,
}

impl FleetStats {
    /// Share of arrived requests that waited for capacity (or expired).
    pub fn waited_share(&self) -> f64 {
        if self.arrived > 0.0 {
            (self.waited + self.past_deadline) / self.arrived
        } else {
            0.0
        }
    }

    /// The wait (seconds) at quantile `q` over every request, served or expired (expired ones
    /// count as waiting the whole deadline).
    pub fn wait_quantile(&self, q: f64) -> f64 {
        let total: f64 = self.waits.iter().sum::<f64>() + self.past_deadline;
        if total <= 0.0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut seen = 0.0;
        for (secs, n) in self.waits.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return secs as f64;
            }
        }
        self.waits.len() as f64
    }
}

/// One simulated service fleet.
#[derive(Debug, Clone)]
pub struct SimFleet {
    shape: FleetShape,
    /// Seconds at which ordered-but-not-ready instances become ready, oldest first.
    pending: VecDeque<u64>,
    ready: u32,
    /// (second of arrival, requests still queued).
    queue: VecDeque<(u64, f64)>,
    stats: FleetStats,
    rng: u64,
}

// === impl SimFleet ===

impl SimFleet {
    /// A fleet with `ready` instances already running.
    pub fn new(shape: FleetShape, ready: u32) -> Self {
        let deadline = usize::try_from(shape.deadline_secs).unwrap_or(usize::MAX);
        Self {
            shape,
            pending: VecDeque::new(),
            ready,
            queue: VecDeque::new(),
            rng: shape.seed | 1,
            stats: FleetStats {
                waits: vec![0.0; deadline.saturating_add(1).min(1 << 20)],
                ..FleetStats::default()
            },
        }
    }

    /// Instances ordered (pending and ready).
    pub fn ordered(&self) -> u32 {
        self.ready
            .saturating_add(u32::try_from(self.pending.len()).unwrap_or(u32::MAX))
    }

    /// Instances ready.
    pub fn ready(&self) -> u32 {
        self.ready
    }

    /// Requests queued now.
    pub fn queued(&self) -> f64 {
        self.queue.iter().map(|(_, n)| n).sum()
    }

    /// Orders `desired` instances at second `t`: new ones are ready at `t + boot`; fewer cancels
    /// pending ones first (newest first), then stops ready ones.
    pub fn order(&mut self, t: u64, desired: u32) {
        let ordered = self.ordered();
        if desired == ordered {
            return;
        }
        if t >= self.shape.warmup_secs {
            self.stats.scale_actions += 1;
        }
        if desired > ordered {
            for _ in 0..desired - ordered {
                let ready_at = t.saturating_add(self.boot());
                // Keep pending sorted by ready time (boots may differ).
                let at = self.pending.partition_point(|&p| p <= ready_at);
                self.pending.insert(at, ready_at);
            }
        } else {
            let mut excess = ordered - desired;
            while excess > 0 && self.pending.pop_back().is_some() {
                excess -= 1;
            }
            self.ready = self.ready.saturating_sub(excess);
        }
    }

    /// One instance's boot time: fixed, or drawn from `boot_secs..=boot_max_secs`.
    fn boot(&mut self) -> u64 {
        let (low, high) = (self.shape.boot_secs, self.shape.boot_max_secs);
        if high <= low {
            return low;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        low + self.rng % (high - low + 1)
    }

    /// Simulates second `t` with `arrivals` new requests.
    pub fn step(&mut self, t: u64, arrivals: f64) {
        while self.pending.front().is_some_and(|&at| at <= t) {
            self.pending.pop_front();
            self.ready += 1;
        }
        let measured = t >= self.shape.warmup_secs;
        if measured {
            self.stats.instance_seconds += f64::from(self.ordered());
        }
        let arrivals = arrivals.max(0.0);
        if measured {
            self.stats.arrived += arrivals;
            if self.ready == 0 {
                self.stats.cold_starts += arrivals;
            }
        }
        if arrivals > 0.0 {
            self.queue.push_back((t, arrivals));
        }
        let capacity = f64::from(self.ready) * self.shape.capacity;
        let mut left = capacity;
        while left > 0.0 {
            let Some((arrived, n)) = self.queue.front_mut() else {
                break;
            };
            let served = n.min(left);
            left -= served;
            *n -= served;
            if *arrived < self.shape.warmup_secs {
                if *n <= 1e-9 {
                    self.queue.pop_front();
                }
                continue;
            }
            let wait = t - *arrived;
            if wait == 0 {
                self.stats.served_at_once += served;
            } else {
                self.stats.waited += served;
            }
            let slot = usize::try_from(wait).unwrap_or(usize::MAX);
            if let Some(bucket) = self.stats.waits.get_mut(slot) {
                *bucket += served;
            }
            if *n <= 1e-9 {
                self.queue.pop_front();
            }
        }
        if self.shape.capacity > 0.0 && measured {
            self.stats.idle_instance_seconds += left / self.shape.capacity;
        }
        // Requests whose deadline passed give up.
        while let Some(&(arrived, n)) = self.queue.front() {
            if t.saturating_sub(arrived) < self.shape.deadline_secs {
                break;
            }
            if arrived >= self.shape.warmup_secs {
                self.stats.past_deadline += n;
            }
            self.queue.pop_front();
        }
    }

    /// Whether nothing is queued and no instance is booting: with no arrivals, every second
    /// until the next order is the same (see [`Self::idle_through`]).
    pub fn is_quiet(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }

    /// Simulates the seconds `from..to` without arrivals on a quiet fleet ([`Self::is_quiet`]) in
    /// one step: what [`Self::step`] with no arrivals would do for each of them (bill the ready
    /// instances, count their capacity as idle). A fleet that is not quiet is stepped second by
    /// second instead.
    pub fn idle_through(&mut self, from: u64, to: u64) {
        if !self.is_quiet() {
            for t in from..to {
                self.step(t, 0.0);
            }
            return;
        }
        let measured = to.saturating_sub(from.max(self.shape.warmup_secs));
        if measured == 0 {
            return;
        }
        let instance_seconds = f64::from(self.ready) * measured as f64;
        self.stats.instance_seconds += instance_seconds;
        if self.shape.capacity > 0.0 {
            self.stats.idle_instance_seconds += instance_seconds;
        }
    }

    /// What the fleet measured so far.
    pub fn stats(&self) -> &FleetStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> FleetShape {
        FleetShape {
            boot_secs: 3,
            boot_max_secs: 3,
            seed: 1,
            capacity: 10.0,
            deadline_secs: 5,
            warmup_secs: 0,
        }
    }

    #[test]
    fn the_warmup_is_simulated_but_not_measured() {
        let shape = FleetShape {
            warmup_secs: 10,
            ..shape()
        };
        let mut fleet = SimFleet::new(shape, 0);
        // 50 requests queue during the warm-up and are served after it: not counted.
        for t in 0..10 {
            fleet.step(t, 5.0);
        }
        fleet.order(9, 1);
        for t in 10..20 {
            fleet.step(t, 1.0);
        }
        let stats = fleet.stats();
        assert_eq!(stats.arrived, 10.0);
        assert_eq!(stats.instance_seconds, 10.0);
        assert_eq!(stats.scale_actions, 0);
        // The warm-up's backlog is served first, so the measured requests wait behind it.
        assert_eq!(
            stats.served_at_once + stats.waited + fleet.queued(),
            10.0 + fleet.queued()
        );
        assert!(stats.waited > 0.0);
    }

    #[test]
    fn every_request_is_counted_exactly_once() {
        let mut fleet = SimFleet::new(shape(), 0);
        let mut x = 7u64;
        for t in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let arrivals = (x >> 58) as f64 + 0.25;
            fleet.step(t, arrivals);
            fleet.order(t, ((x >> 40) % 6) as u32);
        }
        let stats = fleet.stats();
        let accounted = stats.served_at_once + stats.waited + stats.past_deadline + fleet.queued();
        assert!(
            (accounted - stats.arrived).abs() < 1e-6,
            "{accounted} vs {}",
            stats.arrived
        );
        let in_waits: f64 = stats.waits.iter().sum();
        assert!((in_waits - stats.served_at_once - stats.waited).abs() < 1e-6);
    }

    #[test]
    fn drawn_boot_times_stay_in_range_and_repeat_for_a_seed() {
        let spread = FleetShape {
            boot_secs: 5,
            boot_max_secs: 30,
            ..shape()
        };
        let ready_times = |seed: u64| {
            let mut fleet = SimFleet::new(FleetShape { seed, ..spread }, 0);
            fleet.order(0, 20);
            let mut times = Vec::new();
            for t in 0..40 {
                let before = fleet.ready();
                fleet.step(t, 0.0);
                times.extend((before..fleet.ready()).map(|_| t));
            }
            times
        };
        let a = ready_times(42);
        assert_eq!(a.len(), 20);
        assert!(a.iter().all(|&t| (5..=30).contains(&t)), "{a:?}");
        assert!(a.first() != a.last(), "boots differ");
        assert_eq!(a, ready_times(42), "same seed, same run");
    }

    #[test]
    fn instances_are_ready_a_boot_time_after_the_order_and_billed_from_it() {
        let mut fleet = SimFleet::new(shape(), 0);
        fleet.order(0, 2);
        for t in 0..3 {
            fleet.step(t, 0.0);
            assert_eq!(fleet.ready(), 0, "second {t}");
        }
        fleet.step(3, 0.0);
        assert_eq!(fleet.ready(), 2);
        assert_eq!(fleet.stats().instance_seconds, 8.0);
        assert_eq!(fleet.stats().idle_instance_seconds, 2.0);
    }

    #[test]
    fn load_beyond_capacity_waits_in_order_and_expires_at_the_deadline() {
        let mut fleet = SimFleet::new(shape(), 1);
        fleet.step(0, 25.0); // 10 served, 15 wait
        fleet.step(1, 0.0); // 10 of them served after 1 s
        fleet.step(2, 0.0); // the last 5 after 2 s
        let stats = fleet.stats();
        assert_eq!(stats.served_at_once, 10.0);
        assert_eq!(stats.waited, 15.0);
        assert_eq!(stats.waits[1], 10.0);
        assert_eq!(stats.waits[2], 5.0);
        assert!((stats.waited_share() - 0.6).abs() < 1e-9);
        assert_eq!(stats.wait_quantile(0.5), 1.0);
        assert_eq!(stats.wait_quantile(0.99), 2.0);

        let mut starved = SimFleet::new(shape(), 0);
        for t in 0..6 {
            starved.step(t, if t == 0 { 4.0 } else { 0.0 });
        }
        assert_eq!(starved.stats().past_deadline, 4.0);
        assert_eq!(starved.stats().wait_quantile(0.5), 6.0);
    }

    #[test]
    fn scaling_down_cancels_pending_before_stopping_ready_ones() {
        let mut fleet = SimFleet::new(shape(), 2);
        fleet.order(0, 4);
        assert_eq!(fleet.ordered(), 4);
        fleet.order(1, 3);
        assert_eq!((fleet.ready(), fleet.ordered()), (2, 3));
        fleet.order(1, 1);
        assert_eq!((fleet.ready(), fleet.ordered()), (1, 1));
        assert_eq!(fleet.stats().scale_actions, 3);
    }

    #[test]
    fn an_idle_stretch_in_one_step_bills_as_stepping_through_it() {
        let mut stepped = SimFleet::new(shape(), 0);
        stepped.order(0, 3);
        for t in 0..50 {
            stepped.step(t, if t < 20 { 12.0 } else { 0.0 });
        }
        let mut jumped = stepped.clone();
        assert!(stepped.is_quiet());
        for t in 50..5_000 {
            stepped.step(t, 0.0);
        }
        jumped.idle_through(50, 5_000);
        assert_eq!(jumped.stats(), stepped.stats());
        // Across the warm-up boundary only the measured part is billed.
        let mut cold = SimFleet::new(shape(), 2);
        let mut cold_stepped = cold.clone();
        cold.idle_through(0, 30);
        for t in 0..30 {
            cold_stepped.step(t, 0.0);
        }
        assert_eq!(cold.stats(), cold_stepped.stats());
    }
}
