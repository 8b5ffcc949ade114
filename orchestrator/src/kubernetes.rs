//! The `kubernetes` orchestrator: scales Deployments through their `scale` subresource, watches
//! EndpointSlices for the instances that exist, pre-deploys flagged versions, and elects one
//! Forecourt replica to make the scaling decisions.

pub mod leader;
