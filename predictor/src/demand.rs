//! The demand distribution a forecast stands for: how far above (or below) the ensemble's point
//! the actual count of a second lands, as an empirical distribution of recent errors in units of
//! Poisson noise, so one quantile serves every rate — conditional on whether the forecast is
//! behind right now.
//!
//! ```text
//!  scored (point issued h s ago, actual) ─► z = (actual − point) / √(point + 1)
//!        │ was the forecast behind when it was issued?     (its last miss beyond the 99th
//!        ├─ no ─► calm window (3600)                        percentile of the calm window)
//!        └─ yes ► behind window (1800)
//!  demand(point, q) = point + z_q · √(point + 1), z_q from the window of the state now
//!  (before 30 residuals in a window: the other window; before any: z_q of the normal)
//! ```
//!
//! Scaling by `√(point + 1)` is what makes the margin grow with the rate like Poisson noise does
//! (a service at 1,000 req/s needs ~3 % headroom for the same quantile that needs 100 % at 1
//! req/s), while the empirical distribution keeps whatever is heavier than Poisson (bursts,
//! model error) in the tail.
//!
//! Errors come in runs: once a ramp has left the forecast behind, the forecasts issued during
//! the ramp miss too, while in steady traffic a large miss is followed by an ordinary one. One
//! distribution for both prices every second as if a crowd could start in it, which is what
//! made surge protection either cost too much at a cheap quantile or come too late at a strict
//! one. So the residuals are split by the state at issue time — was the forecast's latest miss
//! beyond the 99th percentile of calm misses — and a quantile is read from the window of the
//! state the service is in now: a crowd raises the demand while it lasts (by as much as
//! forecasts issued in earlier crowds fell short, at the quantile the cost of waiting asks
//! for), and calm seconds pay only for calm misses. The calm window is an hour so that the high
//! quantiles a costly wait asks for (0.99 and up) are read from enough samples; the behind
//! window fills only while behind, so its 1,800 residuals span several crowds. Residuals are
//! kept as `f32` (43 KB per horizon with the sorted copies, and up to 1.3 KB of values
//! evicted between re-sorts; one window of 3,600 was 28 KB).

/// Standardized residuals kept per horizon for calm seconds (an hour of seconds).
pub const DEMAND_WINDOW: usize = 3600;
/// Standardized residuals kept per horizon for forecasts issued while behind.
pub const BEHIND_WINDOW: usize = 1800;
/// Residuals needed before a window's empirical distribution is used.
pub const MIN_DEMAND_RESIDUALS: usize = 30;
/// The quantile of calm residuals a miss must exceed for the forecast to count as behind.
pub const BEHIND_QUANTILE: f64 = 0.99;

/// A bounded window of standardized residuals and a sorted copy of them.
#[derive(Debug, Clone, Default)]
struct ResidualWindow {
    values: Vec<f32>,
    sorted: Vec<f32>,
    /// Values overwritten since the last re-sort (they are still in `sorted`).
    evicted: Vec<f32>,
    next: usize,
    since_sort: usize,
}

impl ResidualWindow {
    fn push(&mut self, z: f32, capacity: usize) {
        if self.values.len() < capacity {
            self.values.push(z);
        } else {
            self.evicted.push(self.values[self.next]);
            self.values[self.next] = z;
        }
        self.next = (self.next + 1) % capacity;
        self.since_sort += 1;
        // Re-sort every 1/16 of what is held (so about every 4 minutes once full), and any
        // quantile is then a lookup.
        if self.since_sort >= (self.values.len() / 16).max(1) {
            self.resort(capacity);
        }
    }

    /// Brings `sorted` up to `values`: the evicted values are dropped from it and the values
    /// pushed since the last re-sort (the newest `since_sort` of the ring) merged in, which is
    /// linear in the window (a full sort of 3,600 residuals every 225 pushes was the dearest
    /// part of a modelled second). The result is the sorted multiset, as a sort would give.
    fn resort(&mut self, capacity: usize) {
        let added = std::mem::take(&mut self.since_sort);
        // Drop the evicted values: both sides sorted, equal under `total_cmp` means equal bits.
        self.evicted.sort_unstable_by(f32::total_cmp);
        let mut evicted = self.evicted.iter().peekable();
        self.sorted.retain(|v| {
            if evicted.peek().is_some_and(|e| e.to_bits() == v.to_bits()) {
                evicted.next();
                false
            } else {
                true
            }
        });
        // The newest `added` values of the ring, sorted, merged in from the back.
        let mut fresh = std::mem::take(&mut self.evicted);
        fresh.clear();
        let len = self.values.len();
        for k in 1..=added.min(len) {
            let at = (self.next + capacity - k) % capacity;
            fresh.push(self.values[at]);
        }
        fresh.sort_unstable_by(f32::total_cmp);
        let mut kept = self.sorted.len();
        let mut from_fresh = fresh.len();
        self.sorted.resize(kept + from_fresh, 0.0);
        let mut out = self.sorted.len();
        while from_fresh > 0 {
            out -= 1;
            if kept > 0
                && self.sorted[kept - 1]
                    .total_cmp(&fresh[from_fresh - 1])
                    .is_gt()
            {
                kept -= 1;
                self.sorted[out] = self.sorted[kept];
            } else {
                from_fresh -= 1;
                self.sorted[out] = fresh[from_fresh];
            }
        }
        fresh.clear();
        self.evicted = fresh;
        debug_assert_eq!(self.sorted.len(), self.values.len());
    }

    /// Whether the window resolves quantiles empirically.
    fn is_known(&self) -> bool {
        self.sorted.len() >= MIN_DEMAND_RESIDUALS
    }

    /// The `q` quantile (nearest rank); beyond what the window resolves, its largest residual
    /// plus the normal's distance between the two quantiles, so a stricter quantile still costs
    /// more. Only for a known window.
    fn z(&self, q: f64) -> f64 {
        let n = self.sorted.len();
        let top = 1.0 - 1.0 / n as f64;
        if q > top {
            let largest = f64::from(self.sorted[n - 1]);
            return largest + (normal_quantile(q) - normal_quantile(top)).max(0.0);
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.sorted[rank - 1])
    }
}

/// Recent residuals of the ensemble at one horizon in units of Poisson noise around the point
/// they missed, split by whether the forecast was behind when it was issued.
#[derive(Debug, Clone, Default)]
pub struct DemandRing {
    calm: ResidualWindow,
    behind: ResidualWindow,
    /// The latest residual, in Poisson units.
    last: f32,
}

impl DemandRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Poisson-noise unit around a point: `√(point + 1)`.
    pub fn unit(point: f64) -> f64 {
        (point.max(0.0) + 1.0).sqrt()
    }

    /// Whether the forecast is behind now: its latest miss is beyond the
    /// [`BEHIND_QUANTILE`] of calm misses (and above the point at all). Forecasts issued now
    /// are recorded under this state when they are scored.
    pub fn is_behind(&self) -> bool {
        let last = f64::from(self.last);
        last > 0.0 && self.calm.is_known() && last > self.calm.z(BEHIND_QUANTILE)
    }

    /// Records that a second forecast at `point`, issued while the forecast was `behind` (see
    /// [`Self::is_behind`]), held `actual`.
    pub fn push(&mut self, point: f64, actual: f64, behind: bool) {
        let point = point.max(0.0);
        let residual = actual - point;
        if !(residual.is_finite() && point.is_finite()) {
            return;
        }
        let z = (residual / Self::unit(point)) as f32;
        self.last = z;
        if behind {
            self.behind.push(z, BEHIND_WINDOW);
        } else {
            self.calm.push(z, DEMAND_WINDOW);
        }
    }

    /// Residuals held (both states).
    pub fn len(&self) -> usize {
        self.calm.values.len() + self.behind.values.len()
    }

    /// Whether no residual is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `q` quantile of the residuals in Poisson units for the state the forecast is in now
    /// (see [`Self::is_behind`]), read from the other state's window while this one holds fewer
    /// than [`MIN_DEMAND_RESIDUALS`], and the normal's quantile while neither does.
    pub fn z(&self, q: f64) -> f64 {
        let q = q.clamp(0.0, 1.0);
        let (own, other) = if self.is_behind() {
            (&self.behind, &self.calm)
        } else {
            (&self.calm, &self.behind)
        };
        if own.is_known() {
            own.z(q)
        } else if other.is_known() {
            other.z(q)
        } else {
            normal_quantile(q)
        }
    }

    /// The count a second forecast at `point` stays at or below with probability `q`:
    /// `point + z_q · √(point + 1)`, never negative.
    pub fn demand(&self, point: f64, q: f64) -> f64 {
        let point = if point.is_finite() {
            point.max(0.0)
        } else {
            0.0
        };
        (point + self.z(q) * Self::unit(point)).max(0.0)
    }
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.9) - 1.281_551_565_5).abs() < 1e-8);
        assert!((normal_quantile(0.99) - 2.326_347_874).abs() < 1e-8);
        assert!((normal_quantile(0.01) + 2.326_347_874).abs() < 1e-8);
    }

    #[test]
    fn a_window_resorted_by_merging_holds_what_a_full_sort_gives() {
        // Small windows (re-sorted every push), one filling past 16, and a full one that
        // evicts; residuals with many ties and both zeros, as rounded Poisson misses have.
        for capacity in [1, 7, 40, 3_600] {
            let mut window = ResidualWindow::default();
            let mut x = 11u64;
            let mut resorts = 0;
            for i in 0..3 * capacity + 500 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let z = match (x >> 33) % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => ((x >> 40) % 64) as f32 / 8.0 - 3.0,
                };
                window.push(z, capacity);
                if window.since_sort == 0 {
                    resorts += 1;
                    let mut expected = window.values.clone();
                    expected.sort_unstable_by(f32::total_cmp);
                    let bits = |v: &[f32]| v.iter().map(|z| z.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&window.sorted),
                        bits(&expected),
                        "capacity {capacity}, push {i}"
                    );
                    assert!(window.evicted.is_empty());
                }
            }
            assert!(
                window.values.len() == capacity && resorts > 3,
                "{capacity}: {resorts}"
            );
        }
    }

    #[test]
    fn before_enough_residuals_the_noise_is_poisson() {
        let ring = DemandRing::new();
        // z(0.975) ≈ 1.96: 99 + 1.96 · 10.
        assert!((ring.demand(99.0, 0.975) - (99.0 + 19.6)).abs() < 0.01);
        assert_eq!(ring.demand(0.0, 0.01), 0.0, "never negative");
    }

    #[test]
    fn the_empirical_tail_scales_with_the_square_root_of_the_rate() {
        let mut ring = DemandRing::new();
        // Residuals of exactly z = 0, 1, …, 9 units around a point of 24 (unit 5).
        for i in 0..DEMAND_WINDOW {
            let z = (i % 10) as f64;
            ring.push(24.0, 24.0 + 5.0 * z, false);
        }
        assert_eq!(ring.len(), DEMAND_WINDOW);
        assert_eq!(ring.z(0.9), 8.0);
        // At a point of 99 (unit 10) the same quantile is 8 units of 10.
        assert!((ring.demand(99.0, 0.9) - 179.0).abs() < 1e-9);
        // Past the window's resolution the tail is extended like the normal's.
        let beyond = ring.demand(99.0, 0.9999);
        assert!(beyond > 189.0 && beyond < 189.0 + 10.0 * 1.0, "{beyond}");
    }

    #[test]
    fn old_residuals_leave_the_window() {
        let mut ring = DemandRing::new();
        for _ in 0..DEMAND_WINDOW {
            ring.push(0.0, 50.0, false);
        }
        assert!(ring.z(0.5) > 40.0);
        // A window later (plus one re-sort interval) none of them is left.
        for _ in 0..DEMAND_WINDOW + DEMAND_WINDOW / 16 {
            ring.push(0.0, 0.0, false);
        }
        assert_eq!(ring.z(0.99), 0.0);
        ring.push(1.0, f64::NAN, false);
        assert_eq!(
            ring.len(),
            DEMAND_WINDOW,
            "a non-finite residual is ignored"
        );
    }

    #[test]
    fn a_miss_beyond_calm_misses_reads_the_quantile_of_earlier_crowds() {
        let mut ring = DemandRing::new();
        // Calm: misses of z = 0, 1, …, 9 around a point of 99 (unit 10); the 90th percentile
        // is 8, the 99th 9, and the last miss pushed is an ordinary 0.
        for i in 0..DEMAND_WINDOW {
            ring.push(99.0, 99.0 + 10.0 * ((i + 1) % 10) as f64, false);
        }
        assert!(!ring.is_behind());
        let calm = ring.demand(99.0, 0.9);
        assert!((calm - 179.0).abs() < 1e-9, "{calm}");
        // Earlier crowds: forecasts issued while behind missed by 20 to 39 units.
        for i in 0..BEHIND_WINDOW {
            ring.push(99.0, 99.0 + 10.0 * (20 + i % 20) as f64, true);
        }
        // The last of them (39 units) leaves the forecast behind now: the same quantile is read
        // from the crowds' misses (nearest rank: 37 units).
        assert!(ring.is_behind());
        assert!((ring.demand(99.0, 0.9) - 469.0).abs() < 1e-9);
        // A cheap quantile stays cheaper than a strict one in either state.
        assert!(ring.demand(99.0, 0.5) < ring.demand(99.0, 0.9));
        // One ordinary miss later the service is calm again and pays for calm misses only.
        ring.push(99.0, 99.0 + 10.0, false);
        assert!(!ring.is_behind());
        assert!((ring.demand(99.0, 0.9) - calm).abs() < 1e-9);
    }

    #[test]
    fn until_a_state_has_its_own_misses_the_other_state_stands_in() {
        let mut ring = DemandRing::new();
        for i in 0..100 {
            ring.push(0.0, (i % 10) as f64, false);
        }
        // A miss of 20, beyond the calm 99th percentile (9): behind, with no behind misses
        // known yet, so the calm ones are read.
        ring.push(0.0, 20.0, false);
        assert!(ring.is_behind());
        assert_eq!(ring.z(0.9), ring.calm.z(0.9));
        for _ in 0..MIN_DEMAND_RESIDUALS {
            ring.push(0.0, 30.0, true);
        }
        assert_eq!(
            ring.z(0.9),
            30.0,
            "enough misses while behind: their own quantile"
        );
        // A miss below the point is never behind.
        ring.push(10.0, 0.0, true);
        assert!(!ring.is_behind());
        assert_eq!(ring.z(0.9), ring.calm.z(0.9));
        assert!(ring.z(0.9) <= 9.0);
    }
}
