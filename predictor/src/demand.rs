//! The demand distribution a forecast stands for: how far above (or below) the ensemble's point
//! the actual count of a second lands, as an empirical distribution of recent errors in units of
//! Poisson noise, so one quantile serves every rate.
//!
//! ```text
//!  scored (point issued h s ago, actual) ─► z = (actual − point) / √(point + 1) ─► ring (3600)
//!                                                                                    │ sorted copy,
//!  demand(point, q) = point + z_q · √(point + 1) ◄───────────────────────────────────┘ refreshed
//!  (before 30 residuals: z_q of the normal, i.e. Poisson noise around the point)
//! ```
//!
//! Scaling by `√(point + 1)` is what makes the margin grow with the rate like Poisson noise does
//! (a service at 1,000 req/s needs ~3 % headroom for the same quantile that needs 100 % at 1
//! req/s), while the empirical distribution keeps whatever is heavier than Poisson (bursts,
//! model error) in the tail. The window is an hour so that the high quantiles a costly wait asks
//! for (0.99 and up) are read from enough samples to have seen the last surge: with ten minutes,
//! a flash crowd every half hour was outside the window whenever the next one came, and paying
//! for a higher quantile bought nothing. Residuals are kept as `f32` (28 KB per horizon).

/// Standardized residuals kept per horizon (an hour of seconds).
pub const DEMAND_WINDOW: usize = 3600;
/// Residuals needed before the empirical distribution replaces the Poisson one.
pub const MIN_DEMAND_RESIDUALS: usize = 30;

/// Recent residuals of the ensemble at one horizon in units of Poisson noise around the point
/// they missed, and a sorted copy of them.
#[derive(Debug, Clone, Default)]
pub struct DemandRing {
    values: Vec<f32>,
    sorted: Vec<f32>,
    next: usize,
    since_sort: usize,
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

    /// Records that a second forecast at `point` held `actual`.
    pub fn push(&mut self, point: f64, actual: f64) {
        let point = point.max(0.0);
        let residual = actual - point;
        if !(residual.is_finite() && point.is_finite()) {
            return;
        }
        let z = (residual / Self::unit(point)) as f32;
        if self.values.len() < DEMAND_WINDOW {
            self.values.push(z);
        } else {
            self.values[self.next] = z;
        }
        self.next = (self.next + 1) % DEMAND_WINDOW;
        self.since_sort += 1;
        // Re-sort every 1/16 of what is held (so about every 4 minutes once full): well under a
        // microsecond per second amortised, and any quantile is then a lookup.
        if self.since_sort >= (self.values.len() / 16).max(1) {
            self.since_sort = 0;
            self.sorted.clear();
            self.sorted.extend_from_slice(&self.values);
            self.sorted.sort_unstable_by(f32::total_cmp);
        }
    }

    /// Residuals held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no residual is held yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `q` quantile of the residuals in Poisson units (nearest rank); beyond what the window
    /// resolves, its largest residual plus the normal's distance between the two quantiles, so a
    /// stricter quantile still costs more; the normal's quantile while fewer than
    /// [`MIN_DEMAND_RESIDUALS`] are known.
    pub fn z(&self, q: f64) -> f64 {
        let q = q.clamp(0.0, 1.0);
        let n = self.sorted.len();
        if n < MIN_DEMAND_RESIDUALS {
            return normal_quantile(q);
        }
        let top = 1.0 - 1.0 / n as f64;
        if q > top {
            let largest = f64::from(self.sorted[n - 1]);
            return largest + (normal_quantile(q) - normal_quantile(top)).max(0.0);
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.sorted[rank - 1])
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
            ring.push(24.0, 24.0 + 5.0 * z);
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
            ring.push(0.0, 50.0);
        }
        assert!(ring.z(0.5) > 40.0);
        // A window later (plus one re-sort interval) none of them is left.
        for _ in 0..DEMAND_WINDOW + DEMAND_WINDOW / 16 {
            ring.push(0.0, 0.0);
        }
        assert_eq!(ring.z(0.99), 0.0);
        ring.push(1.0, f64::NAN);
        assert_eq!(
            ring.len(),
            DEMAND_WINDOW,
            "a non-finite residual is ignored"
        );
    }
}
