//! # Classification
//!
//! What a request is, read from its metadata before anything else happens:
//!
//! ```text
//!  host, path, headers ─► routes::RouteTable::classify ─► service
//!  tenant header ───────► metadata::MetadataRules ──────► tenant, tenant class
//!  feature flag (header, cookie) ─► version::matching ──► flagged version (or none)
//! ```
//!
//! Everything here reads the request's bytes and the snapshot only: no lock, no allocation.

pub mod metadata;
pub mod routes;
pub mod version;
