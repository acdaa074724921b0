//! Without the `fleet` feature there is no fleet link: the commit thread's fleet paths take
//! an `Option` of this uninhabited type, which is always `None`.

use crate::error::Result;
use crate::log::LogWriter;

/// No fleet: no value of this type exists.
pub(crate) enum FleetLink {}

/// What an append did (never made without a fleet).
#[expect(dead_code, reason = "the commit thread matches on it; without a fleet none is made")]
pub(crate) enum Appended {
    Committed,
    Conflict,
}

/// A fleet record (never made without a fleet).
pub(crate) struct FleetRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl FleetLink {
    pub fn records_after(&self, _: &LogWriter) -> Result<Vec<FleetRecord>> {
        match *self {}
    }

    pub fn append(&self, _: &LogWriter, _: &[Vec<u8>]) -> Result<Appended> {
        match *self {}
    }

    pub fn due(&mut self, _: u64) -> bool {
        match *self {}
    }

    pub fn heartbeat_every_second(&mut self, _: u64) {
        match *self {}
    }
}
