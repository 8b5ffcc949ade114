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
