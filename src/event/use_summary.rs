//! A key's uses over an interval, as the log's `key.use_summary` records carry them
//! (the summary use-log mode). Part of the log format: its fields are serialised with
//! bincode in this order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::decision::Code;

/// One key's uses over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseSummary {
    /// The first use, unix ms.
    pub first_at: i64,
    /// The last use, unix ms.
    pub last_at: i64,
    /// Uses per outcome.
    pub counts: BTreeMap<Code, u64>,
    /// The last client address seen.
    pub last_ip: Option<IpAddr>,
}
