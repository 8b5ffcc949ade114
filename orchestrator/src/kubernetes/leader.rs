//! Leader election and window publishing between Forecourt replicas (being written).
