//! Instance choice: power of two random choices on in-flight requests (latency EWMA breaks
//! ties), or on peak-EWMA cost.
//!
//! Only confirmed-ready instances are candidates. Instances already tried by this request are
//! skipped; passively ejected ones are skipped unless every remaining candidate is ejected
//! (then the least loaded is tried anyway, as Envoy does below its panic threshold: better a
//! likely failure than a certain 503).

use std::cell::Cell;
use std::sync::Arc;

use forecourt_config::Balance;
use forecourt_orchestrator::{Instance, InstanceId};

/// Instances a request has already tried, without allocating.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    ids: [InstanceId; 8],
    len: usize,
}

// === impl Tried ===

impl Tried {
    /// Remembers `id` (beyond eight attempts the oldest are forgotten).
    pub fn add(&mut self, id: InstanceId) {
        self.ids[self.len % self.ids.len()] = id;
        self.len += 1;
    }

    /// True when `id` was tried.
    pub fn contains(&self, id: InstanceId) -> bool {
        self.ids[..self.len.min(self.ids.len())].contains(&id)
    }

    /// How many attempts were made.
    pub fn count(&self) -> usize {
        self.len
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (addr ^ time.rotate_left(17)) | 1
}

/// A fast thread-local xorshift; good enough to spread load, no lock, no allocation.
fn random(bound: usize) -> usize {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cell.set(x);
        ((x >> 32) as usize * bound) >> 32
    })
}

/// True when `a` is less loaded than `b` by the service's balancing rule.
fn lighter(a: &Instance, b: &Instance, balance: Balance) -> bool {
    match balance {
        Balance::LeastInFlight => match a.in_flight().cmp(&b.in_flight()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => a.latency_ewma_us() <= b.latency_ewma_us(),
        },
        Balance::PeakEwma => {
            // An instance without a latency yet costs as little as possible, so it gets tried.
            let cost = |i: &Instance| (i.latency_ewma_us() + 1.0) * f64::from(i.in_flight() + 1);
            cost(a) <= cost(b)
        }
    }
}

/// Picks an instance from the ready set, or `None` when every one was already tried.
pub fn pick<'a>(
    ready: &'a [Arc<Instance>],
    tried: &Tried,
    now_ms: u64,
    balance: Balance,
) -> Option<&'a Arc<Instance>> {
    let usable = |i: &Instance| !tried.contains(i.id) && !i.is_ejected(now_ms);
    match ready.len() {
        0 => return None,
        1 => {
            let only = &ready[0];
            return (!tried.contains(only.id)).then_some(only);
        }
        n => {
            let a = random(n);
            let mut b = random(n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (&ready[a], &ready[b]);
            match (usable(a), usable(b)) {
                (true, true) => return Some(if lighter(a, b, balance) { a } else { b }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
    }
    // Both draws were unusable: scan for the least loaded usable one, then fall back to
    // ejected-but-untried ones.
    let best = |filter: &dyn Fn(&Instance) -> bool| {
        ready
            .iter()
            .filter(|i| filter(i))
            .fold(None, |best: Option<&'a Arc<Instance>>, i| match best {
                Some(b) if lighter(b, i, balance) => Some(b),
                _ => Some(i),
            })
    };
    best(&usable).or_else(|| best(&|i: &Instance| !tried.contains(i.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn fleet(n: u16) -> Vec<Arc<Instance>> {
        (0..n)
            .map(|p| {
                Arc::new(Instance::new(
                    SocketAddr::from(([127, 0, 0, 1], p + 1)),
                    "v1",
                ))
            })
            .collect()
    }

    #[test]
    fn empty_and_single() {
        assert!(pick(&[], &Tried::default(), 0, Balance::LeastInFlight).is_none());
        let one = fleet(1);
        let mut tried = Tried::default();
        assert_eq!(
            pick(&one, &tried, 0, Balance::LeastInFlight).map(|i| i.id),
            Some(one[0].id)
        );
        tried.add(one[0].id);
        assert!(pick(&one, &tried, 0, Balance::LeastInFlight).is_none());
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let two = fleet(2);
        for _ in 0..5 {
            two[0].start_request();
        }
        for _ in 0..100 {
            assert_eq!(
                pick(&two, &Tried::default(), 0, Balance::LeastInFlight).map(|i| i.id),
                Some(two[1].id)
            );
        }
    }

    #[test]
    fn peak_ewma_prefers_the_faster_instance_at_equal_load() {
        let two = fleet(2);
        two[0].observe_latency(Duration::from_millis(40));
        two[1].observe_latency(Duration::from_millis(2));
        for _ in 0..3 {
            two[1].start_request();
        }
        // Slow with nothing in flight costs 40 ms × 1; fast with three costs 2 ms × 4.
        for _ in 0..100 {
            assert_eq!(
                pick(&two, &Tried::default(), 0, Balance::PeakEwma).map(|i| i.id),
                Some(two[1].id)
            );
        }
        assert_eq!(
            pick(&two, &Tried::default(), 0, Balance::LeastInFlight).map(|i| i.id),
            Some(two[0].id),
            "least in flight ignores latency"
        );
    }

    #[test]
    fn spreads_load_across_equal_instances() {
        let four = fleet(4);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let chosen = pick(&four, &Tried::default(), 0, Balance::LeastInFlight).expect("some");
            let i = four.iter().position(|x| x.id == chosen.id).expect("member");
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 600), "{counts:?}");
    }

    #[test]
    fn skips_tried_and_ejected_but_falls_back_to_ejected() {
        let three = fleet(3);
        let policy = forecourt_config::Ejection {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_percent: 50,
        };
        let mut tried = Tried::default();
        tried.add(three[0].id);
        three[1].eject(0, &policy);
        for _ in 0..50 {
            assert_eq!(
                pick(&three, &tried, 0, Balance::LeastInFlight).map(|i| i.id),
                Some(three[2].id)
            );
        }
        tried.add(three[2].id);
        assert_eq!(
            pick(&three, &tried, 0, Balance::LeastInFlight).map(|i| i.id),
            Some(three[1].id)
        );
        tried.add(three[1].id);
        assert!(pick(&three, &tried, 0, Balance::LeastInFlight).is_none());
    }
}
