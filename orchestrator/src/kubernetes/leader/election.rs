//! The election as pure functions: what the leader Lease says, what this replica has seen of it,
//! and what to write next.
//!
//! ```text
//!  GET lease ─► LeaseRecord ─► observe(previous, record, now) ─► Observation (last change, local clock)
//!                    │                                                │
//!                    └──────────────► decide(me, record, observation, now) ─► Step
//!                                                                              │
//!   Create · Renew · TakeOver ─► claim(step, current lease, ..) ─► the Lease to create or PUT
//!   Follow { holder }         ─► nothing to write
//! ```
//!
//! Expiry is judged by local observation only: a holder's claim has run out when this replica
//! has seen no change of the Lease (resourceVersion, renewTime) for `leaseDurationSeconds` of its
//! own monotonic clock. Wall-clock times on the Lease are written for people and other tools,
//! never compared, so clock skew between nodes cannot elect two leaders.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

/// The parts of the leader Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// The holder; `None` when nobody holds it (released, or written empty).
    pub holder: Option<String>,
    /// How long a claim lasts after its last change, as written on the Lease.
    pub duration_ms: Option<u64>,
    /// What every write changes: the resourceVersion and the renewTime.
    pub version: String,
}

impl LeaseRecord {
    /// Reads the record out of a Lease as the API returned it.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        let renew = spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration_ms: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| s.saturating_mul(1_000)),
            version: format!(
                "{}@{renew}",
                lease.metadata.resource_version.as_deref().unwrap_or("")
            ),
        }
    }
}

/// When this replica last saw the leader Lease change, on its own monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    /// The record's version when last seen.
    pub version: String,
    /// Local time at which that version was first seen.
    pub changed_at_ms: u64,
}

/// Folds one read of the Lease into what this replica has seen: a new version (or the first
/// sight of the Lease) restarts the clock; the same version keeps the old observation.
pub(crate) fn observe(
    previous: Option<Observation>,
    record: Option<&LeaseRecord>,
    now_ms: u64,
) -> Option<Observation> {
    let record = record?;
    match previous {
        Some(seen) if seen.version == record.version => Some(seen),
        _ => Some(Observation {
            version: record.version.clone(),
            changed_at_ms: now_ms,
        }),
    }
}

/// What to do about the leader Lease this period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// No Lease exists: create it with this replica as holder.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// Nobody holds it, or its holder's claim ran out: take it over.
    TakeOver {
        /// The holder whose claim ran out; `None` when it was released.
        from: Option<String>,
    },
    /// Someone else holds a live claim.
    Follow {
        /// The holder.
        holder: String,
        /// How long, unchanged, until this replica may take over.
        expires_in_ms: u64,
    },
}

/// Decides the step from the Lease as read (`record`), the observation made from that same read
/// (`seen`), and the local time. `default_duration_ms` applies when the Lease names no duration.
pub(crate) fn decide(
    me: &str,
    record: Option<&LeaseRecord>,
    seen: Option<&Observation>,
    now_ms: u64,
    default_duration_ms: u64,
) -> Step {
    let Some(record) = record else {
        return Step::Create;
    };
    let Some(holder) = record.holder.as_deref() else {
        return Step::TakeOver { from: None };
    };
    if holder == me {
        return Step::Renew;
    }
    let duration_ms = record.duration_ms.unwrap_or(default_duration_ms);
    // No observation means this read is the first sight: the holder gets a full duration.
    let unchanged_ms = seen.map_or(0, |seen| now_ms.saturating_sub(seen.changed_at_ms));
    if unchanged_ms >= duration_ms {
        Step::TakeOver {
            from: Some(holder.to_owned()),
        }
    } else {
        Step::Follow {
            holder: holder.to_owned(),
            expires_in_ms: duration_ms - unchanged_ms,
        }
    }
}

/// Who writes the claim, and when (wall clock, for the Lease's MicroTime fields).
#[derive(Debug, Clone)]
pub(crate) struct Claimant<'a> {
    /// The Lease's name.
    pub lease: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// This replica's identity.
    pub identity: &'a str,
    /// `leaseDurationSeconds` to write.
    pub duration_seconds: i32,
    /// Now, on the wall clock.
    pub now: MicroTime,
}

/// The Lease to write for `step`: a new one when `current` is `None`, else `current` (keeping
/// its resourceVersion, so the PUT fails with 409 if anyone wrote in between) with this replica
/// as holder. `None` for [`Step::Follow`].
pub(crate) fn claim(step: &Step, current: Option<&Lease>, who: &Claimant<'_>) -> Option<Lease> {
    if matches!(step, Step::Follow { .. }) {
        return None;
    }
    let Some(current) = current else {
        return Some(Lease {
            metadata: ObjectMeta {
                name: Some(who.lease.to_owned()),
                namespace: Some(who.namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(who.identity.to_owned()),
                lease_duration_seconds: Some(who.duration_seconds),
                acquire_time: Some(who.now.clone()),
                renew_time: Some(who.now.clone()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        });
    };
    let mut lease = current.clone();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let held_by_me = spec.holder_identity.as_deref() == Some(who.identity);
    if !held_by_me {
        spec.acquire_time = Some(who.now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    } else if spec.acquire_time.is_none() {
        spec.acquire_time = Some(who.now.clone());
    }
    spec.holder_identity = Some(who.identity.to_owned());
    spec.lease_duration_seconds = Some(who.duration_seconds);
    spec.renew_time = Some(who.now.clone());
    Some(lease)
}

/// The Lease with its holder cleared, for a clean stop: the next replica to read it takes it at
/// once (client-go readers see a one-second claim that already ran out).
pub(crate) fn released(current: &Lease, now: MicroTime) -> Lease {
    let mut lease = current.clone();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now);
    lease
}

/// `leaseDurationSeconds` for a duration: whole seconds, rounded up (a longer claim on the Lease
/// than this replica's renew deadline only makes the others wait longer), at least 1.
pub(crate) fn duration_seconds(duration_ms: u64) -> i32 {
    let seconds = duration_ms.div_ceil(1_000).max(1);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use forecourt_predictor::{Clock, ManualClock};
    use k8s_openapi::jiff::Timestamp;

    const ME: &str = "forecourt-a";
    const OTHER: &str = "forecourt-b";
    const DURATION_MS: u64 = 15_000;

    fn wall(ms: i64) -> MicroTime {
        MicroTime(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn who(now_ms: i64) -> Claimant<'static> {
        Claimant {
            lease: "forecourt",
            namespace: "shop",
            identity: ME,
            duration_seconds: 15,
            now: wall(now_ms),
        }
    }

    /// A Lease as the API would return it.
    fn lease(holder: Option<&str>, resource_version: &str, renew_ms: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("forecourt".into()),
                namespace: Some("shop".into()),
                resource_version: Some(resource_version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                acquire_time: Some(wall(1_000)),
                renew_time: Some(wall(renew_ms)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    /// One period of a replica's election: read, observe, decide.
    fn period(seen: &mut Option<Observation>, read: Option<&Lease>, now_ms: u64) -> Step {
        let record = read.map(LeaseRecord::of);
        *seen = observe(seen.take(), record.as_ref(), now_ms);
        decide(ME, record.as_ref(), seen.as_ref(), now_ms, DURATION_MS)
    }

    #[test]
    fn no_lease_is_created_with_me_as_holder() {
        let mut seen = None;
        let step = period(&mut seen, None, 0);
        assert_eq!(step, Step::Create);
        assert_eq!(seen, None);
        let created = claim(&step, None, &who(5_000)).expect("a lease to create");
        let spec = created.spec.expect("spec");
        assert_eq!(created.metadata.name.as_deref(), Some("forecourt"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(created.metadata.resource_version, None);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(wall(5_000)));
        assert_eq!(spec.renew_time, Some(wall(5_000)));
    }

    #[test]
    fn my_lease_is_renewed_keeping_version_acquire_time_and_transitions() {
        let mut seen = None;
        let mine = lease(Some(ME), "41", 2_000);
        let step = period(&mut seen, Some(&mine), 0);
        assert_eq!(step, Step::Renew);
        let renewed = claim(&step, Some(&mine), &who(9_000)).expect("a lease to write");
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("41"));
        let spec = renewed.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(wall(1_000)));
        assert_eq!(spec.renew_time, Some(wall(9_000)));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn other_holder_expires_after_duration_without_change_on_my_clock() {
        let clock = ManualClock::new(100_000);
        let mut seen = None;
        // The holder's wall clock is far in the past: irrelevant, only changes count.
        let theirs = lease(Some(OTHER), "7", 1);
        let step = period(&mut seen, Some(&theirs), clock.now_ms());
        assert_eq!(
            step,
            Step::Follow {
                holder: OTHER.into(),
                expires_in_ms: DURATION_MS
            }
        );
        clock.advance_ms(DURATION_MS - 1);
        let step = period(&mut seen, Some(&theirs), clock.now_ms());
        assert_eq!(
            step,
            Step::Follow {
                holder: OTHER.into(),
                expires_in_ms: 1
            }
        );
        clock.advance_ms(1);
        let step = period(&mut seen, Some(&theirs), clock.now_ms());
        assert_eq!(
            step,
            Step::TakeOver {
                from: Some(OTHER.into())
            }
        );
        let taken = claim(&step, Some(&theirs), &who(50_000)).expect("a lease to write");
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(wall(50_000)));
        assert_eq!(spec.renew_time, Some(wall(50_000)));
    }

    #[test]
    fn a_renewal_restarts_the_expiry_clock() {
        let clock = ManualClock::new(0);
        let mut seen = None;
        period(
            &mut seen,
            Some(&lease(Some(OTHER), "7", 1_000)),
            clock.now_ms(),
        );
        clock.advance_ms(10_000);
        // Renewed: new resourceVersion. A renewal with a wall clock going backwards still counts.
        let step = period(
            &mut seen,
            Some(&lease(Some(OTHER), "8", 500)),
            clock.now_ms(),
        );
        assert!(matches!(step, Step::Follow { expires_in_ms, .. } if expires_in_ms == DURATION_MS));
        clock.advance_ms(10_000);
        let step = period(
            &mut seen,
            Some(&lease(Some(OTHER), "8", 500)),
            clock.now_ms(),
        );
        assert!(matches!(
            step,
            Step::Follow {
                expires_in_ms: 5_000,
                ..
            }
        ));
        clock.advance_ms(5_000);
        let step = period(
            &mut seen,
            Some(&lease(Some(OTHER), "8", 500)),
            clock.now_ms(),
        );
        assert!(matches!(step, Step::TakeOver { from: Some(_) }));
    }

    #[test]
    fn duration_written_on_the_lease_wins_over_mine() {
        let mut theirs = lease(Some(OTHER), "7", 1);
        if let Some(spec) = theirs.spec.as_mut() {
            spec.lease_duration_seconds = Some(60);
        }
        let mut seen = None;
        period(&mut seen, Some(&theirs), 0);
        assert!(matches!(
            period(&mut seen, Some(&theirs), 59_999),
            Step::Follow { .. }
        ));
        assert!(matches!(
            period(&mut seen, Some(&theirs), 60_000),
            Step::TakeOver { .. }
        ));
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        for holder in [None, Some("")] {
            let free = lease(holder, "9", 1_000);
            let mut seen = None;
            let step = period(&mut seen, Some(&free), 0);
            assert_eq!(step, Step::TakeOver { from: None });
            let taken = claim(&step, Some(&free), &who(2_000)).expect("a lease to write");
            let spec = taken.spec.expect("spec");
            assert_eq!(spec.holder_identity.as_deref(), Some(ME));
            assert_eq!(spec.lease_transitions, Some(4));
        }
    }

    #[test]
    fn release_clears_the_holder_and_keeps_the_version() {
        let mine = lease(Some(ME), "12", 1_000);
        let free = released(&mine, wall(3_000));
        assert_eq!(free.metadata.resource_version.as_deref(), Some("12"));
        let record = LeaseRecord::of(&free);
        assert_eq!(record.holder, None);
        assert_eq!(record.duration_ms, Some(1_000));
        let spec = free.spec.expect("spec");
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.renew_time, Some(wall(3_000)));
    }

    #[test]
    fn lease_without_spec_is_free() {
        let bare = Lease {
            metadata: ObjectMeta {
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let mut seen = None;
        let step = period(&mut seen, Some(&bare), 0);
        assert_eq!(step, Step::TakeOver { from: None });
        let taken = claim(&step, Some(&bare), &who(0)).expect("a lease to write");
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[test]
    fn follow_writes_nothing() {
        let step = Step::Follow {
            holder: OTHER.into(),
            expires_in_ms: 1,
        };
        assert_eq!(
            claim(&step, Some(&lease(Some(OTHER), "1", 0)), &who(0)),
            None
        );
    }

    #[test]
    fn duration_seconds_round_up_and_stay_positive() {
        assert_eq!(duration_seconds(0), 1);
        assert_eq!(duration_seconds(1), 1);
        assert_eq!(duration_seconds(1_000), 1);
        assert_eq!(duration_seconds(1_001), 2);
        assert_eq!(duration_seconds(15_000), 15);
        assert_eq!(duration_seconds(u64::MAX), i32::MAX);
    }
}
