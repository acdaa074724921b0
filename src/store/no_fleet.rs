//! Without the `fleet` feature there is no fleet link: the commit thread's fleet paths take
//! an `Option` of this uninhabited type, which is always `None`.

use crate::error::Result;
use crate::log::LogWriter;

/// No fleet: no value of this type exists.
pub(crate) enum FleetLink {}

/// What an append did (never made without a fleet).
#[expect(dead_code, reason = "the commit thread matches on it; without a fleet none is made")]
pub(crate) enum Appended {
    Committed { seq: u64 },
    Conflict,
}

/// A fleet record (never made without a fleet).
pub(crate) struct FleetRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What a poll found (never made without a fleet).
#[expect(dead_code, reason = "the commit thread matches on it; without a fleet none is made")]
pub(crate) enum Poll {
    NotDue,
    UpToDate,
    Behind,
    Unreachable,
}

impl FleetLink {
    pub fn records_after(&self, _: &LogWriter) -> Result<Vec<FleetRecord>> {
        match *self {}
    }

    pub fn append(&self, _: &LogWriter, _: &[Vec<u8>]) -> Result<Appended> {
        match *self {}
    }

    pub fn poll(&mut self, _: u64) -> Poll {
        match *self {}
    }

    pub fn mark_synced(&mut self) {
        match *self {}
    }

    pub fn stale(&self) -> bool {
        match *self {}
    }

    pub fn synced_ago(&self) -> std::time::Duration {
        match *self {}
    }

    pub fn refresh_shares(&mut self) -> Option<(crate::limits::Shares, Option<std::time::Duration>)> {
        match *self {}
    }

    pub fn heartbeat(&mut self, _: u64) {
        match *self {}
    }

    pub fn leave(&mut self) {
        match *self {}
    }

    pub fn tend_leases(&mut self) {
        match *self {}
    }

    pub fn release_leases(&mut self) {
        match *self {}
    }
}
