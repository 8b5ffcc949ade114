//! Which instances of a service exist, from its EndpointSlices.
//!
//! ```text
//!  watcher(EndpointSlices, kubernetes.io/service-name=shop)  ─┐ Init … InitApply … InitDone: swap
//!  watcher(EndpointSlices, kubernetes.io/service-name=shop-beta) ┤ Apply / Delete: update one slice
//!                                                              ▼
//!  SliceStore per watched Service ─► candidates (ready != false, not terminating) ─► ServiceEndpoints
//!                                                              │ stable minus every version's addresses
//!                                                              ▼
//!                                         Update::Reset { service, instances } (only on change)
//! ```
//!
//! An endpoint is a candidate only while its `ready` condition is not false and it is not
//! terminating; a serving but terminating endpoint leaves the list, so the proxy stops sending it
//! new requests and lets those in flight finish. Forecourt's own health check still has to
//! confirm every candidate before it gets traffic. A restarted watch relists into a fresh store
//! and swaps it in at `InitDone`, so the instances known before stay routable meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use forecourt_config::PortSpec;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::backend::InstanceInfo;

/// The candidate addresses of one EndpointSlice.
pub fn slice_candidates(slice: &EndpointSlice, port: Option<&PortSpec>) -> Vec<SocketAddr> {
    if slice.address_type == "FQDN" {
        return Vec::new();
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    let chosen = match port {
        None => ports.first(),
        Some(PortSpec::Number(n)) => ports.iter().find(|p| p.port == Some(i32::from(*n))),
        Some(PortSpec::Name(name)) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
    };
    let Some(number) = chosen
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for endpoint in &slice.endpoints {
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready) != Some(false);
        let terminating = conditions.and_then(|c| c.terminating) == Some(true);
        if !ready || terminating {
            continue;
        }
        out.extend(
            endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, number)),
        );
    }
    out
}

/// The slices of one watched Service, by slice name, as candidate addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SliceStore {
    slices: BTreeMap<String, Vec<SocketAddr>>,
}

impl SliceStore {
    /// Records a slice's current content.
    pub fn apply(&mut self, slice: &EndpointSlice, port: Option<&PortSpec>) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.slices.insert(name, slice_candidates(slice, port));
    }

    /// Forgets a deleted slice.
    pub fn delete(&mut self, slice: &EndpointSlice) {
        if let Some(name) = &slice.metadata.name {
            self.slices.remove(name);
        }
    }

    /// Every candidate address across the slices, sorted and without duplicates.
    pub fn addresses(&self) -> BTreeSet<SocketAddr> {
        self.slices.values().flatten().copied().collect()
    }
}

/// What one Forecourt service's watches know: the stable Service's and each version's slices.
#[derive(Debug, Default, Clone)]
pub struct ServiceEndpoints {
    /// Stable slices; `None` until the first list completes.
    pub stable: Option<SliceStore>,
    /// Each version's slices, by version name; `None` until its first list completes.
    pub versions: BTreeMap<String, Option<SliceStore>>,
}

impl ServiceEndpoints {
    /// The instance list once every watch has listed once; `None` before.
    ///
    /// An address listed by a version's Service belongs to that version, even when the stable
    /// Service's selector also matches its pod.
    pub fn instances(&self, stable_version: &str) -> Option<Vec<InstanceInfo>> {
        let stable = self.stable.as_ref()?;
        let mut versioned = BTreeMap::new();
        for (version, store) in &self.versions {
            for address in store.as_ref()?.addresses() {
                versioned.entry(address).or_insert_with(|| version.clone());
            }
        }
        let mut out: Vec<InstanceInfo> = stable
            .addresses()
            .into_iter()
            .filter(|a| !versioned.contains_key(a))
            .map(|address| InstanceInfo {
                address,
                version: stable_version.to_owned(),
            })
            .collect();
        out.extend(
            versioned
                .into_iter()
                .map(|(address, version)| InstanceInfo { address, version }),
        );
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn endpoint(ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            ..Endpoint::default()
        }
    }

    fn slice(name: &str, ports: &[(&str, i32)], endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_owned(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some((*n).to_owned()),
                        port: Some(*p),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn only_ready_or_unknown_and_not_terminating_endpoints_are_candidates() {
        let s = slice(
            "shop-abc",
            &[("http", 8080)],
            vec![
                endpoint("10.0.0.1", Some(true), Some(false)),
                endpoint("10.0.0.2", None, None),
                endpoint("10.0.0.3", Some(false), Some(false)),
                endpoint("10.0.0.4", Some(true), Some(true)),
            ],
        );
        assert_eq!(
            slice_candidates(&s, None),
            vec![addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]
        );
    }

    #[test]
    fn the_port_is_chosen_by_name_or_number_and_a_missing_port_lists_nothing() {
        let s = slice(
            "shop-abc",
            &[("metrics", 9090), ("http", 8080)],
            vec![endpoint("10.0.0.1", Some(true), None)],
        );
        let by_name = PortSpec::Name("http".into());
        assert_eq!(
            slice_candidates(&s, Some(&by_name)),
            vec![addr("10.0.0.1:8080")]
        );
        assert_eq!(
            slice_candidates(&s, Some(&PortSpec::Number(9090))),
            vec![addr("10.0.0.1:9090")]
        );
        assert_eq!(slice_candidates(&s, None), vec![addr("10.0.0.1:9090")]);
        assert!(slice_candidates(&s, Some(&PortSpec::Name("grpc".into()))).is_empty());
    }

    #[test]
    fn version_addresses_leave_the_stable_list_and_nothing_is_known_before_every_list() {
        let mut endpoints = ServiceEndpoints::default();
        endpoints.versions.insert("beta".into(), None);
        assert_eq!(endpoints.instances("stable"), None);
        let mut stable = SliceStore::default();
        stable.apply(
            &slice(
                "a",
                &[("http", 1)],
                vec![endpoint("127.0.0.1", Some(true), None)],
            ),
            None,
        );
        stable.apply(
            &slice(
                "b",
                &[("http", 2)],
                vec![endpoint("127.0.0.1", Some(true), None)],
            ),
            None,
        );
        endpoints.stable = Some(stable);
        assert_eq!(endpoints.instances("stable"), None, "beta not listed yet");
        let mut beta = SliceStore::default();
        beta.apply(
            &slice(
                "c",
                &[("http", 2)],
                vec![endpoint("127.0.0.1", Some(true), None)],
            ),
            None,
        );
        endpoints.versions.insert("beta".into(), Some(beta));
        let listed = endpoints.instances("stable").expect("listed");
        assert_eq!(
            listed,
            vec![
                InstanceInfo {
                    address: addr("127.0.0.1:1"),
                    version: "stable".into()
                },
                InstanceInfo {
                    address: addr("127.0.0.1:2"),
                    version: "beta".into()
                },
            ]
        );
    }

    #[test]
    fn a_deleted_slice_takes_its_endpoints_with_it() {
        let mut store = SliceStore::default();
        let s = slice(
            "a",
            &[("http", 1)],
            vec![endpoint("127.0.0.1", Some(true), None)],
        );
        store.apply(&s, None);
        assert_eq!(store.addresses().len(), 1);
        store.delete(&s);
        assert!(store.addresses().is_empty());
    }
}
