//! Judging policies the way a user pays for them: at equal cost. Each policy is swept over its
//! own headroom knob; its runs form a curve of (instance-seconds, share of requests that
//! waited); the lower-left envelope of that curve is what the policy can buy. Forecourt's
//! waiting is read off its envelope at each of KPA's costs, by linear interpolation between
//! the two envelope points around that cost.
//!
//! ```text
//!  waited %                          KPA run at cost c ──► Forecourt's envelope at c
//!     │  ×  KPA                                         ──► ratio = Forecourt / KPA
//!     │    ×    ×                                        ──► gap closed = (KPA − FC) / (KPA − oracle)
//!     │  ○    ×     ×                                      (oracle's envelope at c)
//!     │     ○ ─ ○ Forecourt envelope
//!     └──────────────────── instance-seconds
//! ```
//!
//! A KPA cost outside the range Forecourt's sweep covered has no Forecourt value: the sweep
//! must be widened rather than a value extrapolated.
//!
//! The rate oracle (knows the rate, not the noise) is read off its envelope the same way: its
//! ratio to KPA is what a forecast of the rate that is never wrong would reach at that cost.

/// One run of a sweep: a policy at one setting of its knob.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// The knob's value (target utilization for KPA, waiting cost for Forecourt).
    pub knob: f64,
    /// Instance-seconds billed.
    pub instance_seconds: f64,
    /// Share of requests that waited for capacity or expired, in [0, 1].
    pub waited: f64,
}

/// Forecourt against KPA at one of KPA's sweep points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EqualCost {
    /// KPA's target utilization at this point.
    pub kpa_target: f64,
    /// KPA's instance-seconds at this point.
    pub kpa_instance_seconds: f64,
    /// KPA's waited share.
    pub kpa_waited: f64,
    /// Forecourt's waited share at the same instance-seconds (its envelope, interpolated);
    /// `None` when its sweep does not reach this cost.
    pub forecourt_waited: Option<f64>,
    /// The oracle's waited share at the same instance-seconds, when its sweep reaches it.
    pub oracle_waited: Option<f64>,
    /// The rate oracle's (knows the rate, not the noise) waited share at the same
    /// instance-seconds, when its sweep reaches it.
    pub rate_oracle_waited: Option<f64>,
}

impl EqualCost {
    /// Forecourt's waiting over KPA's at equal cost (below 1 is better); `None` when either is
    /// unknown, 1 when both are zero.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.forecourt_waited?, self.kpa_waited)
    }

    /// The rate oracle's waiting over KPA's at equal cost: the ratio a perfect forecast of the
    /// rate reaches; `None` when either is unknown, 1 when both are zero.
    pub fn rate_oracle_ratio(&self) -> Option<f64> {
        ratio(self.rate_oracle_waited?, self.kpa_waited)
    }

    /// Share of the gap between KPA and the oracle (zero waiting when the oracle's sweep does
    /// not reach this cost) that Forecourt closes; `None` without a gap or a Forecourt value.
    pub fn gap_closed(&self) -> Option<f64> {
        let forecourt = self.forecourt_waited?;
        let oracle = self.oracle_waited.unwrap_or(0.0).min(self.kpa_waited);
        let gap = self.kpa_waited - oracle;
        (gap > 0.0).then(|| (self.kpa_waited - forecourt) / gap)
    }
}

/// `waited` over `kpa` (1 when both are zero, `None` when only KPA waits nothing).
fn ratio(waited: f64, kpa: f64) -> Option<f64> {
    if kpa > 0.0 {
        Some(waited / kpa)
    } else if waited <= 0.0 {
        Some(1.0)
    } else {
        None
    }
}

/// The lower-left envelope of `points`: sorted by cost, each point waiting strictly less than
/// every cheaper one (points that cost more and wait as much are dominated and dropped).
pub fn pareto(points: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut sorted: Vec<SweepPoint> = points
        .iter()
        .copied()
        .filter(|p| p.instance_seconds.is_finite() && p.waited.is_finite())
        .collect();
    sorted.sort_by(|a, b| {
        a.instance_seconds
            .total_cmp(&b.instance_seconds)
            .then(a.waited.total_cmp(&b.waited))
    });
    let mut front: Vec<SweepPoint> = Vec::with_capacity(sorted.len());
    for point in sorted {
        if front.last().is_none_or(|last| point.waited < last.waited) {
            front.push(point);
        }
    }
    front
}

/// The waited share `front` (from [`pareto`]) reaches at `cost` instance-seconds: linear
/// between the envelope points around it; beyond its most expensive point, that point's
/// (spending more never waits more); `None` below its cheapest point.
pub fn waited_at(front: &[SweepPoint], cost: f64) -> Option<f64> {
    let first = front.first()?;
    if cost < first.instance_seconds {
        return None;
    }
    let after = front.iter().position(|p| p.instance_seconds >= cost);
    match after {
        None => front.last().map(|p| p.waited),
        Some(0) => Some(first.waited),
        Some(i) => {
            let (a, b) = (front[i - 1], front[i]);
            let span = b.instance_seconds - a.instance_seconds;
            if span <= 0.0 {
                return Some(b.waited);
            }
            let t = (cost - a.instance_seconds) / span;
            Some(a.waited + t * (b.waited - a.waited))
        }
    }
}

/// Forecourt, the oracle and the rate oracle at each of KPA's sweep points, in KPA's order.
pub fn equal_cost(
    kpa: &[SweepPoint],
    forecourt: &[SweepPoint],
    oracle: &[SweepPoint],
    rate_oracle: &[SweepPoint],
) -> Vec<EqualCost> {
    let forecourt = pareto(forecourt);
    let oracle = pareto(oracle);
    let rate_oracle = pareto(rate_oracle);
    kpa.iter()
        .map(|k| EqualCost {
            kpa_target: k.knob,
            kpa_instance_seconds: k.instance_seconds,
            kpa_waited: k.waited,
            forecourt_waited: waited_at(&forecourt, k.instance_seconds),
            oracle_waited: waited_at(&oracle, k.instance_seconds),
            rate_oracle_waited: waited_at(&rate_oracle, k.instance_seconds),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(knob: f64, cost: f64, waited: f64) -> SweepPoint {
        SweepPoint {
            knob,
            instance_seconds: cost,
            waited,
        }
    }

    #[test]
    fn the_envelope_drops_dominated_runs() {
        let front = pareto(&[
            point(1.0, 100.0, 0.3),
            point(2.0, 200.0, 0.1),
            point(3.0, 150.0, 0.35), // costs more than the first and waits more
            point(4.0, 300.0, 0.1),  // costs more for the same waiting
            point(5.0, 400.0, 0.0),
        ]);
        let knobs: Vec<f64> = front.iter().map(|p| p.knob).collect();
        assert_eq!(knobs, vec![1.0, 2.0, 5.0]);
    }

    #[test]
    fn waiting_is_interpolated_between_envelope_points() {
        let front = pareto(&[point(1.0, 100.0, 0.3), point(2.0, 200.0, 0.1)]);
        assert_eq!(waited_at(&front, 99.0), None, "below the sweep: unknown");
        assert_eq!(waited_at(&front, 100.0), Some(0.3));
        assert!((waited_at(&front, 150.0).expect("in range") - 0.2).abs() < 1e-12);
        assert_eq!(
            waited_at(&front, 500.0),
            Some(0.1),
            "more money never waits more"
        );
    }

    #[test]
    fn equal_cost_compares_at_each_kpa_point() {
        let kpa = [point(0.7, 150.0, 0.4), point(0.9, 50.0, 0.6)];
        let forecourt = [point(1.0, 100.0, 0.3), point(2.0, 200.0, 0.1)];
        let oracle = [point(0.7, 120.0, 0.0)];
        let rate_oracle = [point(0.0, 100.0, 0.4), point(3.0, 200.0, 0.0)];
        let rows = equal_cost(&kpa, &forecourt, &oracle, &rate_oracle);
        assert_eq!(rows.len(), 2);
        let at = rows[0];
        assert!((at.ratio().expect("both known") - 0.5).abs() < 1e-12);
        assert!((at.gap_closed().expect("a gap") - 0.5).abs() < 1e-12);
        assert_eq!(
            rows[1].forecourt_waited, None,
            "Forecourt's sweep does not go that cheap"
        );
        assert_eq!(rows[1].ratio(), None);
        assert_eq!(rows[1].oracle_waited, None);
        // Halfway between its two runs the rate oracle waits 0.2: half of KPA's 0.4.
        assert!((at.rate_oracle_ratio().expect("both known") - 0.5).abs() < 1e-12);
        assert_eq!(rows[1].rate_oracle_ratio(), None);
    }
}
