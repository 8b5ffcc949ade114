//! Pods are real processes: a [`PodRunner`] starts one per replica the controller wants.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{free_port, Backend};

/// Starts the process behind a pod.
pub trait PodRunner: Send + Sync + 'static {
    /// Starts a pod's process for `deployment` with `image`; returns where it listens and a guard
    /// that stops it when dropped.
    fn start(&self, namespace: &str, deployment: &str, image: &str) -> std::io::Result<RunningPod>;
}

/// A started pod: its address and what keeps its process alive.
pub struct RunningPod {
    /// Where the pod listens (or will, once it has booted).
    pub address: SocketAddr,
    /// Stops the pod's process when dropped.
    pub guard: Box<dyn Send + Sync>,
}

/// Runs each pod as a real `forecourt backend` on a free loopback port (the image is ignored).
pub struct BackendPods {
    /// How long each backend takes to listen (`--boot-delay`).
    pub boot_delay: Duration,
}

impl PodRunner for BackendPods {
    fn start(
        &self,
        _namespace: &str,
        _deployment: &str,
        _image: &str,
    ) -> std::io::Result<RunningPod> {
        let backend = Backend::spawn(free_port(), self.boot_delay);
        Ok(RunningPod {
            address: backend.addr(),
            guard: Box::new(backend),
        })
    }
}
