//! Leader election between Forecourt replicas against the fake Kubernetes API server, with the
//! real `kube` client: exactly one leader, failover when the leader's task dies (within the lease
//! duration) and at once when it stops cleanly, a leader that cannot reach the API steps down
//! before anyone could take over, and every replica's windows reach the leader.

#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forecourt_orchestrator::kubernetes::leader::{
    windows_lease_name, Leadership, LeaseSettings, ReplicaWindows, ServiceWindows,
    HOLD_WHILE_STALE_DURATIONS, WINDOWS_OF_LABEL,
};
use forecourt_predictor::{Clock, ManualClock, SystemClock};
use forecourt_test_utils::fake_kube::{FakeKube, PodRunner, RunningPod};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NAMESPACE: &str = "shop";
const LEASE: &str = "forecourt";
/// Lease duration: retry period 667 ms, renew deadline 1.33 s.
const DURATION: Duration = Duration::from_secs(2);
/// Slack for a busy test machine on top of what the algorithm allows.
const SLACK: Duration = Duration::from_millis(1_500);

/// No Deployments here: the controller never starts a pod.
struct NoPods;

impl PodRunner for NoPods {
    fn start(&self, _: &str, _: &str, _: &str) -> io::Result<RunningPod> {
        Err(io::Error::other("no pods in the leader election tests"))
    }
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: NAMESPACE.into(),
        lease: LEASE.into(),
        identity: identity.into(),
        duration: DURATION,
        field_manager: "forecourt".into(),
    }
}

fn windows(identity: &str, rate: f64) -> ReplicaWindows {
    ReplicaWindows {
        identity: identity.into(),
        at_unix_ms: 1_700_000_000_000,
        services: vec![ServiceWindows {
            service: "shop".into(),
            stable_rate: rate,
            held: 2,
            ..ServiceWindows::default()
        }],
    }
}

/// One replica: its shared view, its stop switch, its task.
struct Replica {
    id: &'static str,
    leadership: Arc<Leadership>,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl Replica {
    fn new(id: &'static str) -> Self {
        Self::with_clock(id, Arc::new(SystemClock::new()))
    }

    /// A replica whose local time (change observation, deadlines) is `clock`.
    fn with_clock(id: &'static str, clock: Arc<dyn Clock>) -> Self {
        Replica {
            id,
            leadership: Leadership::new(settings(id), clock),
            stop: None,
            task: None,
        }
    }

    fn start(&mut self, fake: &FakeKube) {
        let config = kube::Config::new(fake.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (stop, stopped) = watch::channel(false);
        self.leadership.publish(windows(self.id, 10.0));
        self.task = Some(tokio::spawn(self.leadership.clone().run(client, stopped)));
        self.stop = Some(stop);
    }

    /// Stops cleanly and waits for the task to finish (release, delete).
    async fn shut_down(&mut self) {
        self.stop.take().unwrap().send_replace(true);
        let task = self.task.take().unwrap();
        tokio::time::timeout(DURATION * 3, task)
            .await
            .expect("run returns soon after shutdown")
            .unwrap();
    }

    /// Kills the task: no release, no delete (a crashed pod).
    async fn abort(&mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        let _ = tokio::time::timeout(DURATION, task).await.unwrap();
        self.stop = None;
    }
}

/// Polls `check` every 10 ms until true; panics after `within`. Returns how long it took.
async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Watches every replica every 2 ms and remembers the most leaders seen at once.
fn watch_for_two_leaders(all: Vec<Arc<Leadership>>) -> (Arc<AtomicUsize>, Arc<AtomicBool>) {
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (most2, done2) = (most.clone(), done.clone());
    tokio::spawn(async move {
        while !done2.load(Ordering::Relaxed) {
            let leaders = all.iter().filter(|l| l.is_leader()).count();
            most2.fetch_max(leaders, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (most, done)
}

fn holder(fake: &FakeKube) -> Option<String> {
    let lease = fake.lease(NAMESPACE, LEASE)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

fn run(
    scenario: impl FnOnce(&FakeKube) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>,
) {
    let fake = FakeKube::start(Arc::new(NoPods));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), scenario(&fake)).await })
        .expect("the scenario finishes within a minute");
}

#[test]
fn one_leader_fails_over_on_crash_and_at_once_on_clean_stop() {
    run(|fake| {
        Box::pin(async move {
            let mut replicas = [Replica::new("a"), Replica::new("b"), Replica::new("c")];
            let (most, done) =
                watch_for_two_leaders(replicas.iter().map(|r| r.leadership.clone()).collect());
            replicas[0].start(fake);
            replicas[1].start(fake);

            // Exactly one of a and b leads, the Lease says so, and the other follows it.
            eventually(DURATION * 3, "a leader", || {
                replicas.iter().any(|r| r.leadership.is_leader())
            })
            .await;
            let first = replicas
                .iter()
                .position(|r| r.leadership.is_leader())
                .unwrap();
            let other = 1 - first;
            let first_id = replicas[first].id;
            assert_eq!(holder(fake).as_deref(), Some(first_id));
            eventually(DURATION * 2, "the follower sees the leader", || {
                replicas[other].leadership.leader().as_deref() == Some(first_id)
            })
            .await;

            // Stable over several lease durations: renewals, no change of leader.
            tokio::time::sleep(DURATION * 2).await;
            assert!(replicas[first].leadership.is_leader());
            assert!(!replicas[other].leadership.is_leader());
            let stats = replicas[first].leadership.stats();
            assert_eq!(stats.transitions, 1, "{stats:?}");
            assert!(stats.renewals >= 3, "{stats:?}");
            assert_eq!(stats.api_errors, 0, "{stats:?}");
            assert_eq!(holder(fake).as_deref(), Some(first_id));

            // Windows: each in its own Lease, and the leader sees the follower's.
            let peers = replicas[first].leadership.peers();
            assert_eq!(*peers, vec![windows(replicas[other].id, 10.0)]);
            let windows_leases: Vec<_> = fake
                .leases(NAMESPACE)
                .into_iter()
                .filter(|l| l["metadata"]["labels"][WINDOWS_OF_LABEL] == LEASE)
                .map(|l| l["metadata"]["name"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                windows_leases,
                [
                    windows_lease_name(LEASE, "a"),
                    windows_lease_name(LEASE, "b")
                ]
            );
            // New counts reach the leader within a retry period or two.
            replicas[other]
                .leadership
                .publish(windows(replicas[other].id, 42.0));
            eventually(DURATION * 2, "new windows reach the leader", || {
                *replicas[first].leadership.peers() == vec![windows(replicas[other].id, 42.0)]
            })
            .await;

            // The leader crashes: the follower takes over once the Lease has not changed for the
            // lease duration (never before the old leader's renew deadline: see `most`).
            replicas[first].abort().await;
            let took = eventually(DURATION * 2 + SLACK, "failover after a crash", || {
                replicas[other].leadership.is_leader()
            })
            .await;
            assert!(
                !replicas[first].leadership.is_leader(),
                "a dead task's view steps down by itself"
            );
            assert!(
                took >= DURATION / 2,
                "failover waited for the lease to expire ({took:?})"
            );
            assert_eq!(holder(fake).as_deref(), Some(replicas[other].id));
            // The dead replica's windows stop being fresh.
            eventually(DURATION + SLACK, "stale windows dropped", || {
                replicas[other].leadership.peers().is_empty()
            })
            .await;

            // A third replica joins and follows; then the leader stops cleanly: failover at once.
            replicas[2].start(fake);
            let (leader_id, third) = (replicas[other].id, 2);
            eventually(DURATION * 2, "c follows", || {
                replicas[third].leadership.leader().as_deref() == Some(leader_id)
            })
            .await;
            eventually(DURATION * 2, "c's windows reach the leader", || {
                replicas[other]
                    .leadership
                    .peers()
                    .iter()
                    .any(|w| w.identity == "c")
            })
            .await;
            let stopped_at = Instant::now();
            replicas[other].shut_down().await;
            assert!(!replicas[other].leadership.is_leader());
            eventually(DURATION * 2, "failover after a clean stop", || {
                replicas[third].leadership.is_leader()
            })
            .await;
            let took = stopped_at.elapsed();
            // Waiting for expiry would take at least duration − retry period after the stop.
            let expiry = DURATION - settings("c").retry_period();
            assert!(
                took < expiry,
                "a released lease is taken at once, took {took:?}"
            );
            assert_eq!(holder(fake).as_deref(), Some("c"));
            assert!(fake
                .lease(NAMESPACE, &windows_lease_name(LEASE, leader_id))
                .is_none());

            // The last one stops: the Lease is left free, its windows gone; the crashed replica's
            // windows Lease remains until a leader has seen it unchanged for ten durations.
            replicas[third].shut_down().await;
            assert_eq!(holder(fake), None);
            assert!(fake
                .lease(NAMESPACE, &windows_lease_name(LEASE, "c"))
                .is_none());
            assert!(fake
                .lease(NAMESPACE, &windows_lease_name(LEASE, first_id))
                .is_some());

            done.store(true, Ordering::Relaxed);
            assert_eq!(most.load(Ordering::Relaxed), 1, "never two leaders at once");
        })
    });
}

#[test]
fn a_leader_cut_off_from_the_api_steps_down_and_recovers() {
    run(|fake| {
        Box::pin(async move {
            let mut replicas = [Replica::new("a"), Replica::new("b")];
            let (most, done) =
                watch_for_two_leaders(replicas.iter().map(|r| r.leadership.clone()).collect());
            replicas[0].start(fake);
            eventually(DURATION * 3, "a leads alone", || {
                replicas[0].leadership.is_leader()
            })
            .await;
            replicas[1].start(fake);
            eventually(DURATION * 2, "b follows a", || {
                replicas[1].leadership.leader().as_deref() == Some("a")
            })
            .await;

            // Every call fails for longer than the renew deadline: a steps down in time, nobody
            // else can read the Lease so nobody takes over.
            fake.fail_for(DURATION * 2, 503);
            let cut_off = Instant::now();
            eventually(DURATION + SLACK, "a steps down", || {
                !replicas[0].leadership.is_leader()
            })
            .await;
            assert!(
                cut_off.elapsed() <= DURATION,
                "stepped down before the lease could expire"
            );
            assert!(!replicas[1].leadership.is_leader());

            // The API is back: one of them leads (a renews, or b, which saw no change for longer
            // than the lease duration, takes over first; the optimistic PUT lets only one win).
            eventually(DURATION * 3 + SLACK, "a leader again", || {
                replicas.iter().any(|r| r.leadership.is_leader())
            })
            .await;
            let leader = replicas
                .iter()
                .find(|r| r.leadership.is_leader())
                .unwrap()
                .id;
            assert_eq!(holder(fake).as_deref(), Some(leader));
            let stats = replicas[0].leadership.stats();
            assert!(stats.api_errors >= 2, "{stats:?}");
            assert!(stats.transitions >= 2, "{stats:?}");
            assert!(replicas[1].leadership.stats().api_errors >= 2);

            for replica in &mut replicas {
                replica.shut_down().await;
            }
            assert_eq!(holder(fake), None);
            done.store(true, Ordering::Relaxed);
            assert_eq!(most.load(Ordering::Relaxed), 1, "never two leaders at once");
        })
    });
}

#[test]
fn a_stale_peer_holds_scale_downs_until_its_lease_is_gone() {
    run(|fake| {
        Box::pin(async move {
            // a judges b's Lease on a clock the test moves; b renews on real time.
            let clock = Arc::new(ManualClock::new(1_000_000));
            let mut a = Replica::with_clock("a", clock.clone());
            let mut b = Replica::new("b");
            let duration_ms = DURATION.as_millis() as u64;
            let peers_of_a = |a: &Replica| {
                a.leadership
                    .peers()
                    .iter()
                    .map(|w| w.identity.clone())
                    .collect::<Vec<_>>()
            };
            a.start(fake);
            eventually(DURATION * 3, "a leads", || a.leadership.is_leader()).await;
            b.start(fake);
            eventually(DURATION * 3, "a sees b's windows", || {
                peers_of_a(&a) == ["b"]
            })
            .await;
            assert_eq!(a.leadership.hold_scale_down(), None);

            // b crashes: its Lease stays, unchanged. Once stale on a's clock, a holds scale-downs.
            b.abort().await;
            clock.advance_ms(duration_ms);
            eventually(DURATION * 3, "b is stale", || {
                a.leadership.stale_peers().as_slice() == ["b"]
            })
            .await;
            assert!(
                peers_of_a(&a).is_empty(),
                "a stale peer's load is not summed"
            );
            let reason = a
                .leadership
                .hold_scale_down()
                .expect("scale-downs are held");
            assert!(reason.contains('b'), "{reason}");
            assert_eq!(a.leadership.stats().stale_peers, 1);

            // Stale beyond the bound: b counts as gone, scale-downs resume.
            clock.advance_ms(duration_ms * HOLD_WHILE_STALE_DURATIONS);
            eventually(DURATION * 3, "b is gone for good", || {
                a.leadership.hold_scale_down().is_none()
            })
            .await;

            // b comes back (renewing the Lease it left), then goes stale again: held again,
            // until its Lease is deleted.
            b.start(fake);
            eventually(DURATION * 3, "b is back", || peers_of_a(&a) == ["b"]).await;
            b.abort().await;
            clock.advance_ms(duration_ms);
            eventually(DURATION * 3, "b is stale again", || {
                a.leadership.hold_scale_down().is_some()
            })
            .await;
            let config = kube::Config::new(fake.url().parse().unwrap());
            let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
                kube::Api::namespaced(kube::Client::try_from(config).unwrap(), NAMESPACE);
            leases
                .delete(&windows_lease_name(LEASE, "b"), &Default::default())
                .await
                .unwrap();
            eventually(DURATION * 3, "b's deleted Lease releases the hold", || {
                a.leadership.hold_scale_down().is_none()
            })
            .await;

            // A clean stop deletes the replica's own Lease (with its uid as precondition).
            b.start(fake);
            eventually(DURATION * 3, "b is back again", || peers_of_a(&a) == ["b"]).await;
            b.shut_down().await;
            assert!(
                fake.lease(NAMESPACE, &windows_lease_name(LEASE, "b"))
                    .is_none(),
                "b deleted its windows Lease"
            );
            let own = fake
                .lease(NAMESPACE, &windows_lease_name(LEASE, "a"))
                .expect("a's windows Lease");
            assert_eq!(
                own["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "forecourt"
            );
            a.shut_down().await;
        })
    });
}
