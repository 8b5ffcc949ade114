//! Window publishing as pure functions: the name and content of each replica's windows Lease,
//! and the book the leader keeps of the others'.
//!
//! ```text
//!  ReplicaWindows ─► own_lease(base, ..) ─► Lease `{lease}-{identity}` (annotation: JSON windows,
//!                                            label forecourt.dev/windows-of, renewTime now)
//!
//!  LIST by label ─► listed(lease) ─► PeerBook::update(listed, own name, now)
//!                                        ├─► fresh(now)   changed within `duration` (local clock)
//!                                        ├─► stale(now)   not fresh, unchanged for < 4 × duration:
//!                                        │                the leader holds scale-downs meanwhile
//!                                        └─► garbage(now) unchanged for 10 × duration, and
//!                                                         labelled managed-by forecourt
//! ```
//!
//! A peer that stops renewing its Lease drops out of `fresh`, so the leader would see less load
//! than is really there while that peer may still be serving it (a slow API server, a network
//! split). So the peer stays in `stale` for [`HOLD_WHILE_STALE_DURATIONS`] more durations; while
//! any peer is there the leader scales up but not down. A Lease that is deleted (a clean stop) or
//! stays stale beyond that bound releases the hold.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use super::super::names::{cut, hash_suffix, sanitize, MAX_LABEL};
use super::super::version::{is_managed, MANAGED_BY, MANAGED_BY_LABEL};
use super::ReplicaWindows;

/// Annotation of a windows Lease that holds the replica's [`ReplicaWindows`] as JSON.
pub const WINDOWS_ANNOTATION: &str = "forecourt.dev/windows";
/// Label of a windows Lease: the (label-safe) name of the leader Lease it reports to.
pub const WINDOWS_OF_LABEL: &str = "forecourt.dev/windows-of";
/// Longest JSON written to the annotation (the API caps all annotations at 256 KiB together).
pub const MAX_WINDOWS_JSON: usize = 200 * 1024;
/// Windows Leases unchanged for this many lease durations are deleted by the leader.
pub const GARBAGE_AFTER_DURATIONS: u64 = 10;
/// A peer whose windows went stale holds the leader's scale-downs for this many lease durations
/// more (then it counts as gone).
pub const HOLD_WHILE_STALE_DURATIONS: u64 = 3;

/// Longest object name (DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// The name of the Lease that `identity` publishes its windows in: `{lease}-{identity}` when
/// that is a valid object name, else a sanitized form with a hash of the original appended.
pub fn windows_lease_name(lease: &str, identity: &str) -> String {
    dns_name(&format!("{lease}-{identity}"), MAX_NAME)
}

/// The value of [`WINDOWS_OF_LABEL`] for the leader Lease `lease` (label values are at most 63
/// characters; longer names are shortened with a hash).
pub fn windows_label(lease: &str) -> String {
    dns_name(lease, MAX_LABEL)
}

/// `raw` when it is already lowercase alphanumerics and `-`, starting and ending alphanumeric
/// and at most `max` long; else those characters only (others become `-`), cut to fit, with
/// `-` and eight hex digits of a hash of `raw`, so distinct inputs stay distinct.
fn dns_name(raw: &str, max: usize) -> String {
    let valid = !raw.is_empty()
        && raw.len() <= max
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if valid {
        return raw.to_owned();
    }
    let suffix = hash_suffix(raw);
    let room = max.saturating_sub(suffix.len() + 1);
    let stem = sanitize(raw);
    let stem = cut(&stem, room);
    if stem.is_empty() {
        suffix
    } else {
        format!("{stem}-{suffix}")
    }
}

/// The annotation's JSON for `windows`: non-finite numbers (which JSON cannot carry; serde would
/// write `null`, which no reader accepts) become 0 or no forecast; too large a result is refused.
pub(crate) fn to_json(windows: &ReplicaWindows) -> Result<String, String> {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let mut clean = windows.clone();
    for service in &mut clean.services {
        service.stable_rate = finite(service.stable_rate);
        service.panic_rate = finite(service.panic_rate);
        service.stable_concurrency = finite(service.stable_concurrency);
        service.panic_concurrency = finite(service.panic_concurrency);
        service.forecast_point = service.forecast_point.filter(|x| x.is_finite());
        service.forecast_upper = service.forecast_upper.filter(|x| x.is_finite());
        service.forecast_demand = service.forecast_demand.filter(|x| x.is_finite());
    }
    let json = serde_json::to_string(&clean).map_err(|e| format!("cannot encode windows: {e}"))?;
    if json.len() > MAX_WINDOWS_JSON {
        return Err(format!(
            "windows take {} bytes of JSON, more than the {MAX_WINDOWS_JSON} an annotation may hold",
            json.len()
        ));
    }
    Ok(json)
}

/// Where and as whom this replica writes its windows.
#[derive(Debug, Clone)]
pub(crate) struct Publisher<'a> {
    /// The windows Lease's name ([`windows_lease_name`]).
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// [`WINDOWS_OF_LABEL`]'s value ([`windows_label`]).
    pub label: &'a str,
    /// This replica's identity (the holder).
    pub identity: &'a str,
    /// `leaseDurationSeconds` to write.
    pub duration_seconds: i32,
    /// Now, on the wall clock.
    pub now: MicroTime,
}

/// Whether `lease`, found under this replica's windows Lease name, may be overwritten or deleted
/// by it: it carries [`MANAGED_BY_LABEL`], or (written before Forecourt labelled its Leases) it
/// is a windows Lease of `label` held by `identity`.
pub(crate) fn is_own_windows_lease(lease: &Lease, label: &str, identity: &str) -> bool {
    if is_managed(&lease.metadata) {
        return true;
    }
    let labelled = lease
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(WINDOWS_OF_LABEL))
        .is_some_and(|value| value == label);
    let held = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(identity);
    labelled && held
}

/// This replica's windows Lease carrying `json`: `base` (the Lease as last read or written,
/// keeping its resourceVersion for an optimistic PUT) updated, or a new one to create.
pub(crate) fn own_lease(base: Option<&Lease>, by: &Publisher<'_>, json: String) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(by.name.to_owned()),
            namespace: Some(by.namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let labels = lease.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(WINDOWS_OF_LABEL.to_owned(), by.label.to_owned());
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    lease
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(WINDOWS_ANNOTATION.to_owned(), json);
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.acquire_time.is_none() || spec.holder_identity.as_deref() != Some(by.identity) {
        spec.acquire_time = Some(by.now.clone());
    }
    spec.holder_identity = Some(by.identity.to_owned());
    spec.lease_duration_seconds = Some(by.duration_seconds);
    spec.renew_time = Some(by.now.clone());
    lease
}

/// One windows Lease as listed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    /// The Lease's name.
    pub name: String,
    /// Its resourceVersion (for a conditional delete).
    pub resource_version: Option<String>,
    /// What every write changes: resourceVersion and renewTime.
    pub version: String,
    /// The windows it carries, or why they could not be read.
    pub windows: Result<ReplicaWindows, String>,
    /// Whether it carries [`MANAGED_BY_LABEL`] (only those are ever deleted).
    pub managed: bool,
}

/// Reads a listed windows Lease.
pub(crate) fn listed(lease: &Lease) -> Listed {
    let renew = lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let resource_version = lease.metadata.resource_version.clone();
    let windows = match lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WINDOWS_ANNOTATION))
    {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("invalid windows json: {e}")),
        None => Err(format!("no {WINDOWS_ANNOTATION} annotation")),
    };
    Listed {
        name: lease.metadata.name.clone().unwrap_or_default(),
        version: format!("{}@{renew}", resource_version.as_deref().unwrap_or("")),
        resource_version,
        windows,
        managed: is_managed(&lease.metadata),
    }
}

/// What the book knows of one peer's windows Lease.
#[derive(Debug, Clone)]
struct Entry {
    /// Its version when last listed.
    version: String,
    /// Its resourceVersion when last listed.
    resource_version: Option<String>,
    /// Local time of the last change seen (or of the first sight).
    since_ms: u64,
    /// Whether a change was actually seen (a Lease already there at the first listing was not).
    changed: bool,
    /// The windows, when readable.
    windows: Option<ReplicaWindows>,
    /// Whether the Lease carries [`MANAGED_BY_LABEL`].
    managed: bool,
}

/// The other replicas' windows Leases, with when each last changed on this replica's clock.
#[derive(Debug, Default)]
pub(crate) struct PeerBook {
    /// By Lease name.
    entries: HashMap<String, Entry>,
    /// Whether a listing was folded in already: after that, a new Lease is a change seen.
    primed: bool,
}

impl PeerBook {
    /// Folds in a complete listing: new versions count as changes at `now_ms`; Leases not
    /// listed any more are forgotten; `own` (this replica's Lease) is skipped, as are windows
    /// that claim to be `me`.
    pub fn update(&mut self, listing: Vec<Listed>, own: &str, me: &str, now_ms: u64) {
        let mut next = HashMap::with_capacity(listing.len());
        for item in listing {
            if item.name == own || item.name.is_empty() {
                continue;
            }
            let windows = item.windows.ok().filter(|w| w.identity != me);
            let managed = item.managed;
            let entry = match self.entries.remove(&item.name) {
                Some(old) if old.version == item.version => Entry {
                    windows,
                    managed,
                    ..old
                },
                old => Entry {
                    version: item.version,
                    resource_version: item.resource_version,
                    since_ms: now_ms,
                    changed: old.is_some() || self.primed,
                    windows,
                    managed,
                },
            };
            next.insert(item.name, entry);
        }
        self.entries = next;
        self.primed = true;
    }

    /// The windows of peers whose Lease changed less than `duration_ms` ago, by identity.
    pub fn fresh(&self, now_ms: u64, duration_ms: u64) -> Vec<ReplicaWindows> {
        let mut fresh: Vec<ReplicaWindows> = self
            .entries
            .values()
            .filter(|e| e.changed && now_ms.saturating_sub(e.since_ms) < duration_ms)
            .filter_map(|e| e.windows.clone())
            .collect();
        fresh.sort_by(|a, b| a.identity.cmp(&b.identity));
        fresh
    }

    /// The identities of peers with readable windows that are not fresh, yet not gone either:
    /// unchanged for at least `duration_ms` (or not seen to change since this replica's first
    /// listing) but for less than `1 + `[`HOLD_WHILE_STALE_DURATIONS`] durations. Sorted.
    pub fn stale(&self, now_ms: u64, duration_ms: u64) -> Vec<String> {
        let bound = duration_ms.saturating_mul(1 + HOLD_WHILE_STALE_DURATIONS);
        let mut stale: Vec<String> = self
            .entries
            .values()
            .filter(|e| {
                let age = now_ms.saturating_sub(e.since_ms);
                let fresh = e.changed && age < duration_ms;
                !fresh && age < bound
            })
            .filter_map(|e| e.windows.as_ref().map(|w| w.identity.clone()))
            .collect();
        stale.sort();
        stale.dedup();
        stale
    }

    /// Leases unchanged for [`GARBAGE_AFTER_DURATIONS`] × `duration_ms`: name, resourceVersion
    /// and whether it carries [`MANAGED_BY_LABEL`] (one without it must not be deleted).
    pub fn garbage(&self, now_ms: u64, duration_ms: u64) -> Vec<(String, Option<String>, bool)> {
        let limit = duration_ms.saturating_mul(GARBAGE_AFTER_DURATIONS);
        let mut garbage: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.since_ms) >= limit)
            .map(|(name, e)| (name.clone(), e.resource_version.clone(), e.managed))
            .collect();
        garbage.sort();
        garbage
    }

    /// Forgets a deleted Lease.
    pub fn forget(&mut self, name: &str) {
        self.entries.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ServiceWindows;
    use super::*;
    use forecourt_predictor::{Clock, ManualClock};
    use k8s_openapi::jiff::Timestamp;

    const DURATION_MS: u64 = 15_000;

    fn wall(ms: i64) -> MicroTime {
        MicroTime(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn windows(identity: &str, rate: f64) -> ReplicaWindows {
        ReplicaWindows {
            identity: identity.into(),
            at_unix_ms: 1_700_000_000_000,
            services: vec![ServiceWindows {
                service: "shop".into(),
                stable_rate: rate,
                ..ServiceWindows::default()
            }],
        }
    }

    fn item(name: &str, version: &str, identity: &str) -> Listed {
        Listed {
            name: name.into(),
            resource_version: Some(version.into()),
            version: version.into(),
            windows: Ok(windows(identity, 1.0)),
            managed: true,
        }
    }

    fn identities(windows: &[ReplicaWindows]) -> Vec<&str> {
        windows.iter().map(|w| w.identity.as_str()).collect()
    }

    #[test]
    fn valid_names_are_kept() {
        assert_eq!(
            windows_lease_name("forecourt", "pod-7d9f-x2"),
            "forecourt-pod-7d9f-x2"
        );
        assert_eq!(windows_label("forecourt"), "forecourt");
    }

    #[test]
    fn invalid_names_are_sanitized_and_stay_distinct() {
        let a = windows_lease_name("forecourt", "Pod_A.local");
        let b = windows_lease_name("forecourt", "pod-a-local");
        assert!(a.starts_with("forecourt-pod-a-local-"), "{a}");
        assert_ne!(a, b);
        assert!(is_dns_subdomain(&a, 253), "{a}");
        // Same input, same name (every replica and every restart agrees).
        assert_eq!(a, windows_lease_name("forecourt", "Pod_A.local"));
        // An empty identity never names the leader Lease itself.
        let empty = windows_lease_name("forecourt", "");
        assert_ne!(empty, "forecourt");
        assert!(is_dns_subdomain(&empty, 253), "{empty}");
        // Nothing usable at all.
        let odd = windows_lease_name("", "__");
        assert!(is_dns_subdomain(&odd, 253), "{odd}");
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let long = "x".repeat(300);
        let name = windows_lease_name("forecourt", &long);
        assert_eq!(name.len(), 253);
        assert!(is_dns_subdomain(&name, 253), "{name}");
        assert_ne!(name, windows_lease_name("forecourt", &"x".repeat(301)));
        let label = windows_label(&"a-".repeat(60));
        assert!(label.len() <= 63);
        assert!(is_dns_subdomain(&label, 63), "{label}");
    }

    fn is_dns_subdomain(name: &str, max: usize) -> bool {
        !name.is_empty()
            && name.len() <= max
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn own_lease_carries_windows_label_and_holder() {
        let by = Publisher {
            name: "forecourt-a",
            namespace: "shop",
            label: "forecourt",
            identity: "a",
            duration_seconds: 15,
            now: wall(2_000),
        };
        let json = serde_json::to_string(&windows("a", 3.0)).expect("serializable");
        let created = own_lease(None, &by, json.clone());
        assert_eq!(created.metadata.name.as_deref(), Some("forecourt-a"));
        assert_eq!(
            created
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(WINDOWS_OF_LABEL)),
            Some(&"forecourt".to_owned())
        );
        assert!(is_managed(&created.metadata));
        assert!(is_own_windows_lease(&created, "forecourt", "a"));
        let spec = created.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.renew_time, Some(wall(2_000)));
        assert_eq!(spec.acquire_time, Some(wall(2_000)));

        let mut stored = created;
        stored.metadata.resource_version = Some("5".into());
        let later = Publisher {
            now: wall(7_000),
            ..by
        };
        let updated = own_lease(Some(&stored), &later, json);
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("5"));
        let spec = updated.spec.clone().expect("spec");
        assert_eq!(spec.renew_time, Some(wall(7_000)));
        assert_eq!(spec.acquire_time, Some(wall(2_000)));
        let read = listed(&updated);
        assert_eq!(read.windows, Ok(windows("a", 3.0)));
        assert_eq!(read.resource_version.as_deref(), Some("5"));
    }

    #[test]
    fn json_carries_only_finite_numbers_and_fits_an_annotation() {
        let mut odd = windows("a", f64::NAN);
        odd.services[0].panic_rate = f64::INFINITY;
        odd.services[0].forecast_point = Some(f64::NAN);
        odd.services[0].forecast_upper = Some(4.5);
        let json = to_json(&odd).expect("encodable");
        let back: ReplicaWindows = serde_json::from_str(&json).expect("readable");
        assert_eq!(back.services[0].stable_rate, 0.0);
        assert_eq!(back.services[0].panic_rate, 0.0);
        assert_eq!(back.services[0].forecast_point, None);
        assert_eq!(back.services[0].forecast_upper, Some(4.5));

        let mut huge = windows("a", 1.0);
        huge.services[0].service = "s".repeat(MAX_WINDOWS_JSON);
        assert!(to_json(&huge).is_err());
    }

    #[test]
    fn older_and_newer_json_still_reads() {
        let old: ReplicaWindows = serde_json::from_str(
            r#"{"identity":"b","at_unix_ms":5,"services":[{"service":"shop","stable_rate":2.0}],"extra":1}"#,
        )
        .expect("readable");
        assert_eq!(old.services[0].stable_rate, 2.0);
        assert_eq!(old.services[0].held, 0);
    }

    #[test]
    fn unreadable_windows_are_reported() {
        let mut lease = Lease::default();
        lease.metadata.name = Some("forecourt-x".into());
        assert!(listed(&lease).windows.is_err());
        lease.metadata.annotations = Some(BTreeMap::from([(
            WINDOWS_ANNOTATION.to_owned(),
            "{".to_owned(),
        )]));
        assert!(listed(&lease).windows.is_err());
    }

    #[test]
    fn peers_are_fresh_only_while_their_lease_changes() {
        let clock = ManualClock::new(0);
        let mut book = PeerBook::default();
        // First listing: b and c were already there; their age is unknown, so not fresh yet.
        book.update(
            vec![
                item("l-b", "1", "b"),
                item("l-c", "1", "c"),
                item("l-a", "1", "a"),
            ],
            "l-a",
            "a",
            clock.now_ms(),
        );
        assert!(book.fresh(clock.now_ms(), DURATION_MS).is_empty());
        // b writes again; d appears after the first listing: both seen to change.
        clock.advance_ms(5_000);
        book.update(
            vec![
                item("l-b", "2", "b"),
                item("l-c", "1", "c"),
                item("l-d", "1", "d"),
            ],
            "l-a",
            "a",
            clock.now_ms(),
        );
        assert_eq!(
            identities(&book.fresh(clock.now_ms(), DURATION_MS)),
            ["b", "d"]
        );
        // d keeps writing, b stops: b is dropped once unchanged for the duration.
        clock.advance_ms(DURATION_MS - 1);
        book.update(
            vec![
                item("l-b", "2", "b"),
                item("l-c", "1", "c"),
                item("l-d", "2", "d"),
            ],
            "l-a",
            "a",
            clock.now_ms(),
        );
        assert_eq!(
            identities(&book.fresh(clock.now_ms(), DURATION_MS)),
            ["b", "d"]
        );
        clock.advance_ms(1);
        assert_eq!(identities(&book.fresh(clock.now_ms(), DURATION_MS)), ["d"]);
    }

    #[test]
    fn own_and_unreadable_windows_are_never_peers() {
        let mut book = PeerBook::default();
        book.update(Vec::new(), "l-a", "a", 0);
        let mut broken = item("l-e", "1", "e");
        broken.windows = Err("invalid".into());
        book.update(
            vec![
                item("l-a", "1", "a"),
                item("l-a2", "1", "a"),
                broken,
                item("l-f", "1", "f"),
            ],
            "l-a",
            "a",
            1,
        );
        assert_eq!(identities(&book.fresh(1, DURATION_MS)), ["f"]);
    }

    #[test]
    fn leases_unchanged_for_ten_durations_are_garbage() {
        let clock = ManualClock::new(0);
        let mut book = PeerBook::default();
        book.update(vec![item("l-b", "1", "b")], "l-a", "a", clock.now_ms());
        clock.advance_ms(DURATION_MS);
        book.update(
            vec![item("l-b", "1", "b"), item("l-c", "1", "c")],
            "l-a",
            "a",
            clock.now_ms(),
        );
        clock.advance_ms(9 * DURATION_MS - 1);
        assert!(book.garbage(clock.now_ms(), DURATION_MS).is_empty());
        clock.advance_ms(1);
        assert_eq!(
            book.garbage(clock.now_ms(), DURATION_MS),
            [("l-b".to_owned(), Some("1".to_owned()), true)]
        );
        book.forget("l-b");
        clock.advance_ms(DURATION_MS);
        assert_eq!(
            book.garbage(clock.now_ms(), DURATION_MS),
            [("l-c".to_owned(), Some("1".to_owned()), true)]
        );
    }

    #[test]
    fn a_stale_peer_is_held_until_deleted_or_stale_beyond_the_bound() {
        let clock = ManualClock::new(0);
        let mut book = PeerBook::default();
        book.update(Vec::new(), "l-a", "a", clock.now_ms());
        let listing = |b: &str, c: &str| vec![item("l-b", b, "b"), item("l-c", c, "c")];
        book.update(listing("1", "1"), "l-a", "a", clock.now_ms());
        assert!(book.stale(clock.now_ms(), DURATION_MS).is_empty());
        // c keeps renewing, b stops: b is stale from one duration after its last change...
        clock.advance_ms(DURATION_MS);
        book.update(listing("1", "2"), "l-a", "a", clock.now_ms());
        assert_eq!(identities(&book.fresh(clock.now_ms(), DURATION_MS)), ["c"]);
        assert_eq!(book.stale(clock.now_ms(), DURATION_MS), ["b"]);
        // ...until it has been stale for HOLD_WHILE_STALE_DURATIONS more.
        clock.set_ms(DURATION_MS * (1 + HOLD_WHILE_STALE_DURATIONS) - 1);
        book.update(listing("1", "3"), "l-a", "a", clock.now_ms());
        assert_eq!(book.stale(clock.now_ms(), DURATION_MS), ["b"]);
        clock.advance_ms(1);
        assert!(book.stale(clock.now_ms(), DURATION_MS).is_empty());
        // A renewal makes it fresh again; going stale again holds again; deletion ends it.
        book.update(listing("2", "3"), "l-a", "a", clock.now_ms());
        assert_eq!(
            identities(&book.fresh(clock.now_ms(), DURATION_MS)),
            ["b", "c"]
        );
        assert!(book.stale(clock.now_ms(), DURATION_MS).is_empty());
        clock.advance_ms(DURATION_MS);
        assert_eq!(book.stale(clock.now_ms(), DURATION_MS), ["b", "c"]);
        book.update(vec![item("l-c", "4", "c")], "l-a", "a", clock.now_ms());
        assert!(book.stale(clock.now_ms(), DURATION_MS).is_empty());
    }

    #[test]
    fn peers_not_yet_seen_to_change_hold_too_but_unreadable_ones_do_not() {
        let clock = ManualClock::new(0);
        let mut book = PeerBook::default();
        let mut broken = item("l-e", "1", "e");
        broken.windows = Err("invalid".into());
        // The first listing: b's age is unknown, so its load may be real: held, not counted.
        book.update(vec![item("l-b", "1", "b"), broken], "l-a", "a", 0);
        assert!(book.fresh(0, DURATION_MS).is_empty());
        assert_eq!(book.stale(0, DURATION_MS), ["b"]);
        clock.set_ms(DURATION_MS * (1 + HOLD_WHILE_STALE_DURATIONS));
        assert!(book.stale(clock.now_ms(), DURATION_MS).is_empty());
    }

    #[test]
    fn garbage_says_which_leases_carry_the_managed_by_label() {
        let mut book = PeerBook::default();
        let mut foreign = item("l-x", "1", "x");
        foreign.managed = false;
        book.update(vec![item("l-b", "1", "b"), foreign], "l-a", "a", 0);
        let limit = DURATION_MS * GARBAGE_AFTER_DURATIONS;
        assert_eq!(
            book.garbage(limit, DURATION_MS),
            [
                ("l-b".to_owned(), Some("1".to_owned()), true),
                ("l-x".to_owned(), Some("1".to_owned()), false),
            ]
        );
        // Listed from the API: the label is read off the Lease.
        let mut lease = Lease::default();
        assert!(!listed(&lease).managed);
        lease.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_owned(),
            MANAGED_BY.to_owned(),
        )]));
        assert!(listed(&lease).managed);
    }

    #[test]
    fn a_foreign_lease_under_this_replicas_name_is_not_its_own() {
        let mut lease = Lease::default();
        assert!(!is_own_windows_lease(&lease, "forecourt", "a"));
        // Written by an older Forecourt: no managed-by label, but its windows label and holder.
        lease.metadata.labels = Some(BTreeMap::from([(
            WINDOWS_OF_LABEL.to_owned(),
            "forecourt".to_owned(),
        )]));
        lease.spec = Some(LeaseSpec {
            holder_identity: Some("a".into()),
            ..LeaseSpec::default()
        });
        assert!(is_own_windows_lease(&lease, "forecourt", "a"));
        assert!(!is_own_windows_lease(&lease, "forecourt", "b"));
        assert!(!is_own_windows_lease(&lease, "other", "a"));
    }

    #[test]
    fn leases_no_longer_listed_are_forgotten() {
        let mut book = PeerBook::default();
        book.update(Vec::new(), "l-a", "a", 0);
        book.update(vec![item("l-b", "1", "b")], "l-a", "a", 1);
        assert_eq!(book.fresh(1, DURATION_MS).len(), 1);
        book.update(Vec::new(), "l-a", "a", 2);
        assert!(book.fresh(2, DURATION_MS).is_empty());
        assert!(book.garbage(u64::MAX, DURATION_MS).is_empty());
    }
}
