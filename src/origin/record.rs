//! The package-level origin record (SPEC §6): for one repository and package, whether versions
//! may be published there and whether upstreams may add versions, and the event that decided
//! so. The store keeps them (`crate::store`), `[[package_origin]]` overrides them
//! (`crate::config`), and `crate::origin::package` decides with them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// ALLOW or BLOCK, as `proxy.toml` and the vendor write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allowance {
    Allow,
    Block,
}

impl Allowance {
    /// `"ALLOW"` or `"BLOCK"` (exactly; the configuration is written in capitals).
    pub fn parse(text: &str) -> Option<Allowance> {
        match text {
            "ALLOW" => Some(Allowance::Allow),
            "BLOCK" => Some(Allowance::Block),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Allowance::Allow => "ALLOW",
            Allowance::Block => "BLOCK",
        }
    }
}

/// The event that made a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginEvent {
    /// The first version published to this (hosted) repository.
    FirstUpload,
    /// The first page of this (remote) repository listing files of the package that was served
    /// to a client.
    FirstIngestion,
}

/// One package-level origin record, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRecord {
    pub publish: Allowance,
    pub upstream: Allowance,
    pub event: OriginEvent,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The version that arrived first, when known (an upload's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl OriginRecord {
    /// Published first: publishing stays allowed, upstreams may add nothing.
    pub fn first_upload(version: &str, at: SystemTime) -> OriginRecord {
        OriginRecord {
            publish: Allowance::Allow,
            upstream: Allowance::Block,
            event: OriginEvent::FirstUpload,
            at: crate::store::millis(at),
            version: Some(version.to_owned()),
        }
    }

    /// Ingested first: upstreams stay allowed, nothing may be published.
    pub fn first_ingestion(at: SystemTime) -> OriginRecord {
        OriginRecord {
            publish: Allowance::Block,
            upstream: Allowance::Allow,
            event: OriginEvent::FirstIngestion,
            at: crate::store::millis(at),
            version: None,
        }
    }

    pub fn time(&self) -> SystemTime {
        crate::store::from_millis(self.at)
    }
}
