//! End to end: the process lifecycle — a graceful upgrade (a new `forecourt` takes over the
//! listening socket from the running one) loses no request, and SIGTERM drains and exits.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

fn policy(backend: &Backend) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 1 }}
services:
  - name: web
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{}\" }}]
",
        backend.addr()
    )
}

#[test]
fn a_graceful_upgrade_loses_no_request() {
    let backend = Backend::start();
    let mut old = Forecourt::start(&policy(&backend));
    old.wait_ready("web", 1);
    let proxy = old.proxy;
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut new = None;
    std::thread::scope(|scope| {
        // Two clients: one opening a new connection per request, one on a keep-alive connection
        // it reopens when the server closes it (as clients of a draining server do).
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match get(proxy, "/fresh", &[]) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) | Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        // The new process waits for the listening socket; SIGQUIT makes the old one hand it over
        // and drain.
        new = Some(start_upgrade(
            &old.policy_path,
            &old.log_path.with_extension("new.log"),
        ));
        std::thread::sleep(Duration::from_millis(500));
        old.process.signal(libc::SIGQUIT);
        let exited = old.process.wait_exit(Duration::from_secs(20));
        assert!(
            exited.is_some(),
            "the old process did not exit after handing over"
        );
        // The new one serves the admin API once the old one released it.
        let admin = wait_for(Duration::from_secs(10), || {
            get(old.admin, "/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(admin.is_some(), "the new process's admin API never came up");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    assert!(ok > 50, "only {ok} requests got through");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the upgrade",
        ok + failed
    );
    let mut new = new.unwrap();
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(Duration::from_secs(15)).is_some());
}

/// Starts a `forecourt run --upgrade` on `policy_path`, which waits for the running one's
/// listening socket; its output goes to `log`.
fn start_upgrade(policy_path: &std::path::Path, log: &std::path::Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(forecourt_bin())
        .args(["run", "--upgrade", "--threads", "2", "-c"])
        .arg(policy_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Process { child }
}

/// The hand-over repeated: five upgrades in a row under two clients that open a new connection
/// for every request, without pause (so connections are accepted right up to each shutdown
/// broadcast). A connection accepted just before a shutdown must be
/// read and answered, never closed unread.
#[test]
fn repeated_graceful_upgrades_lose_no_request() {
    let backend = Backend::start();
    let mut first = Forecourt::start(&policy(&backend));
    first.wait_ready("web", 1);
    let (proxy, admin) = (first.proxy, first.admin);
    let policy_path = first.policy_path.clone();
    let log_base = first.log_path.clone();
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let errors = std::sync::Mutex::new(Vec::new());
    let mut upgrades: Vec<Process> = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match get(proxy, "/fresh", &[]) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            errors.lock().unwrap().push(format!("status {}", r.status));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
        for round in 0..5 {
            std::thread::sleep(Duration::from_millis(300));
            let log = log_base.with_extension(format!("upgrade-{round}.log"));
            let next = start_upgrade(&policy_path, &log);
            std::thread::sleep(Duration::from_millis(500));
            let running = upgrades.last_mut().unwrap_or(&mut first.process);
            running.signal(libc::SIGQUIT);
            let exited = running.wait_exit(Duration::from_secs(20));
            assert!(
                exited.is_some(),
                "round {round}: the old process did not exit"
            );
            let up = wait_for(Duration::from_secs(10), || {
                get(admin, "/healthz", &[]).ok().filter(|r| r.status == 200)
            });
            assert!(
                up.is_some(),
                "round {round}: the new admin API never came up"
            );
            upgrades.push(next);
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    assert!(ok > 200, "only {ok} requests got through");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed over five upgrades: {:?}",
        ok + failed,
        errors.into_inner().unwrap()
    );
    let last = upgrades.last_mut().unwrap();
    last.signal(libc::SIGTERM);
    assert!(last.wait_exit(Duration::from_secs(15)).is_some());
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits() {
    let backend = Backend::start();
    let mut fc = Forecourt::start(&policy(&backend));
    fc.wait_ready("web", 1);
    let proxy = fc.proxy;
    let slow = std::thread::spawn(move || get(proxy, "/sleep/1500", &[]).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    fc.process.signal(libc::SIGTERM);
    // The request in flight is answered in full...
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    // ...and the process exits once it is done, well within the drain deadline.
    assert!(fc.process.wait_exit(Duration::from_secs(15)).is_some());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "exited {:?} after SIGTERM",
        asked.elapsed()
    );
    // A restart with the same policy (on fresh ports) serves again.
    let again = Forecourt::start(&policy(&backend));
    again.wait_ready("web", 1);
    assert_eq!(get(again.proxy, "/", &[]).unwrap().status, 200);
}
