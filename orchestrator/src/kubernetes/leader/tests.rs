//! The shared state between `run` and the control loop, without any API server: terms, the
//! renew deadline, step-down, counters.

use super::*;
use forecourt_predictor::ManualClock;

const DURATION: Duration = Duration::from_secs(15);

fn settings() -> LeaseSettings {
    LeaseSettings {
        namespace: "shop".into(),
        lease: "forecourt".into(),
        identity: "forecourt-a".into(),
        duration: DURATION,
        field_manager: "forecourt".into(),
    }
}

fn leadership() -> (Arc<ManualClock>, Arc<Leadership>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let leadership = Leadership::new(settings(), clock.clone());
    (clock, leadership)
}

#[test]
fn periods_follow_the_duration() {
    let settings = settings();
    assert_eq!(settings.retry_period(), Duration::from_secs(5));
    assert_eq!(settings.renew_deadline(), Duration::from_secs(10));
    assert_eq!(settings.windows_lease(), "forecourt-forecourt-a");
    let tiny = LeaseSettings {
        duration: Duration::ZERO,
        ..settings
    };
    assert_eq!(tiny.retry_period(), MIN_RETRY_PERIOD);
}

#[test]
fn a_new_replica_leads_nobody() {
    let (_clock, leadership) = leadership();
    assert!(!leadership.is_leader());
    assert_eq!(leadership.leader(), None);
    assert!(leadership.peers().is_empty());
    assert_eq!(leadership.stats(), LeadershipStats::default());
}

#[test]
fn winning_leads_until_the_renew_deadline_then_steps_down() {
    let (clock, leadership) = leadership();
    let started = clock.now_ms();
    // The write took a while: the term still counts from when it started.
    clock.advance_ms(300);
    leadership.lead(started, &Step::Create);
    assert!(leadership.is_leader());
    assert_eq!(leadership.leader().as_deref(), Some("forecourt-a"));
    assert_eq!(leadership.stats().transitions, 1);

    // No renewal: false exactly at the deadline, even before the loop notices.
    clock.set_ms(started + 10_000 - 1);
    assert!(leadership.is_leader());
    clock.set_ms(started + 10_000);
    assert!(!leadership.is_leader());
    assert_eq!(leadership.stats().transitions, 1);
    // The loop notices: counted once.
    leadership.check_deadline();
    leadership.check_deadline();
    let stats = leadership.stats();
    assert!(!stats.is_leader);
    assert_eq!(stats.transitions, 2);
    // Before any other replica may take over (duration after its last sight of our write).
    assert!(settings().renew_deadline() < DURATION);
}

#[test]
fn renewing_extends_the_term() {
    let (clock, leadership) = leadership();
    leadership.lead(clock.now_ms(), &Step::Create);
    for _ in 0..5 {
        clock.advance_ms(5_000);
        leadership.check_deadline();
        leadership.lead(clock.now_ms(), &Step::Renew);
    }
    clock.advance_ms(9_999);
    leadership.check_deadline();
    let stats = leadership.stats();
    assert!(stats.is_leader);
    assert_eq!(stats.renewals, 5);
    assert_eq!(stats.transitions, 1);
}

#[test]
fn a_renewal_after_stepping_down_leads_again() {
    let (clock, leadership) = leadership();
    leadership.lead(clock.now_ms(), &Step::Create);
    clock.advance_ms(20_000);
    leadership.check_deadline();
    assert!(!leadership.is_leader());
    // The Lease still named this replica and the optimistic PUT went through.
    leadership.lead(clock.now_ms(), &Step::Renew);
    assert!(leadership.is_leader());
    assert_eq!(leadership.stats().transitions, 3);
}

#[test]
fn another_holder_or_a_lost_race_steps_down_at_once() {
    let (clock, leadership) = leadership();
    leadership.lead(clock.now_ms(), &Step::TakeOver { from: None });
    leadership.follow(Some("forecourt-b".into()));
    assert!(!leadership.is_leader());
    assert_eq!(leadership.leader().as_deref(), Some("forecourt-b"));

    leadership.lead(
        clock.now_ms(),
        &Step::TakeOver {
            from: Some("forecourt-b".into()),
        },
    );
    assert!(leadership.is_leader());
    leadership.step_down("conflict");
    assert!(!leadership.is_leader());
    // Re-leading after a step-down needs a new successful write, not just time.
    clock.advance_ms(1);
    assert!(!leadership.is_leader());
    assert_eq!(leadership.stats().transitions, 4);
}

#[test]
fn published_windows_replace_the_previous() {
    let (_clock, leadership) = leadership();
    let windows = |rate| ReplicaWindows {
        identity: "forecourt-a".into(),
        at_unix_ms: 1,
        services: vec![ServiceWindows {
            service: "shop".into(),
            stable_rate: rate,
            ..ServiceWindows::default()
        }],
    };
    leadership.publish(windows(1.0));
    leadership.publish(windows(2.0));
    let latest = leadership.local.load_full().expect("published");
    assert_eq!(*latest, windows(2.0));
}

/// A complete listing of peers' windows Leases, as `(identity, version)`.
fn listing(peers: &[(&str, &str)]) -> Vec<windows::Listed> {
    peers
        .iter()
        .map(|(identity, version)| windows::Listed {
            name: windows_lease_name("forecourt", identity),
            resource_version: Some((*version).to_owned()),
            version: (*version).to_owned(),
            windows: Ok(ReplicaWindows {
                identity: (*identity).to_owned(),
                at_unix_ms: 1,
                services: vec![ServiceWindows {
                    service: "shop".into(),
                    stable_rate: 40.0,
                    ..ServiceWindows::default()
                }],
            }),
            managed: true,
        })
        .collect()
}

/// What the backend decides of an order from 5 to `wanted` replicas with `leadership` as gate.
fn order_from_5(leadership: &Leadership, wanted: u32) -> Option<String> {
    super::super::scale_down_hold(Some(leadership), Some(5), wanted)
}

#[test]
fn a_stale_peer_holds_scale_downs_until_it_is_gone_for_good() {
    let (clock, leadership) = leadership();
    let own = settings().windows_lease();
    let me = settings().identity;
    let duration_ms = millis(DURATION);
    let mut book = PeerBook::default();
    book.update(Vec::new(), &own, &me, clock.now_ms());
    let refresh = |book: &mut PeerBook, peers: &[(&str, &str)]| {
        book.update(listing(peers), &own, &me, clock.now_ms());
        leadership.refresh_peers(book, clock.now_ms());
    };

    // Both peers renew: their load is summed, nothing is held.
    refresh(&mut book, &[("forecourt-b", "1"), ("forecourt-c", "1")]);
    assert_eq!(leadership.peers().len(), 2);
    assert_eq!(order_from_5(&leadership, 3), None);

    // b stops renewing: it drops out of the sum, and the order that would lower replicas on the
    // strength of the smaller sum is held; raising and keeping are not.
    clock.advance_ms(duration_ms);
    refresh(&mut book, &[("forecourt-b", "1"), ("forecourt-c", "2")]);
    let peers: Vec<String> = leadership
        .peers()
        .iter()
        .map(|w| w.identity.clone())
        .collect();
    assert_eq!(peers, ["forecourt-c"]);
    assert_eq!(*leadership.stale_peers(), ["forecourt-b"]);
    assert_eq!(leadership.stats().stale_peers, 1);
    let reason = order_from_5(&leadership, 3).expect("the scale-down is held");
    assert!(reason.contains("forecourt-b"), "{reason}");
    assert_eq!(order_from_5(&leadership, 7), None);
    assert_eq!(order_from_5(&leadership, 5), None);

    // Still held just before the bound; stale beyond it, b counts as gone and scale-down resumes.
    clock.set_ms(clock.now_ms() + duration_ms * HOLD_WHILE_STALE_DURATIONS - 1);
    refresh(&mut book, &[("forecourt-b", "1"), ("forecourt-c", "3")]);
    assert!(order_from_5(&leadership, 3).is_some());
    clock.advance_ms(1);
    refresh(&mut book, &[("forecourt-b", "1"), ("forecourt-c", "3")]);
    assert!(leadership.stale_peers().is_empty());
    assert_eq!(order_from_5(&leadership, 3), None);

    // b comes back, goes stale again (held again), then its Lease is deleted: gone at once.
    refresh(&mut book, &[("forecourt-b", "2"), ("forecourt-c", "4")]);
    assert_eq!(order_from_5(&leadership, 3), None);
    clock.advance_ms(duration_ms);
    refresh(&mut book, &[("forecourt-b", "2"), ("forecourt-c", "5")]);
    assert!(order_from_5(&leadership, 3).is_some());
    refresh(&mut book, &[("forecourt-c", "6")]);
    assert_eq!(order_from_5(&leadership, 3), None);
    assert_eq!(leadership.stats().stale_peers, 0);
}

#[test]
fn an_unknown_count_or_no_gate_holds_nothing() {
    let (clock, leadership) = leadership();
    let mut book = PeerBook::default();
    book.update(
        listing(&[("forecourt-b", "1")]),
        "own",
        "forecourt-a",
        clock.now_ms(),
    );
    leadership.refresh_peers(&book, clock.now_ms());
    // Listed at the first sight, not yet seen to change: its load may be real, so held.
    assert!(order_from_5(&leadership, 1).is_some());
    assert_eq!(
        super::super::scale_down_hold(Some(leadership.as_ref()), None, 1),
        None
    );
    assert_eq!(super::super::scale_down_hold(None, Some(5), 1), None);
}

#[test]
fn api_errors_are_classified_by_status_code() {
    let status = |code: u16, reason: &str| {
        let mut status = kube::core::Status::failure("boom", reason);
        status.code = code;
        kube::Error::Api(Box::new(status))
    };
    assert!(matches!(
        CallError::from(status(409, "AlreadyExists")),
        CallError::Conflict(_)
    ));
    assert!(matches!(
        CallError::from(status(409, "")),
        CallError::Conflict(_)
    ));
    assert_eq!(
        CallError::from(status(404, "NotFound")),
        CallError::NotFound
    );
    let forbidden = CallError::from(status(403, "Forbidden"));
    assert_eq!(forbidden, CallError::Failed("403 Forbidden: boom".into()));
    assert_eq!(forbidden.to_string(), "403 Forbidden: boom");
}

#[test]
fn failures_are_counted_every_time() {
    let (_clock, leadership) = leadership();
    let mut throttle = Throttle::default();
    for _ in 0..3 {
        assert!(!leadership.failed(&mut throttle, "read", &CallError::Failed("x".into())));
    }
    assert_eq!(leadership.stats().api_errors, 3);
}

#[test]
fn wall_clock_is_after_2020() {
    assert!(wall_now().0.as_millisecond() > 1_577_836_800_000);
}

/// `run` must be spawnable on a multi-threaded runtime.
#[allow(dead_code)]
fn run_is_send(leadership: Arc<Leadership>, client: kube::Client, stop: watch::Receiver<bool>) {
    fn send<T: Send + 'static>(_: T) {}
    send(leadership.run(client, stop));
}
