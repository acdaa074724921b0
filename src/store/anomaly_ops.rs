//! The store's anomaly operations: checking now for what the detector found, and the
//! networks presenting keys that match none.

use crate::anomaly::LoggedAnomaly;
use crate::anomaly::sketch::NetworkCount;
use crate::error::{Error, Result};
use crate::usage::UsageSubject;

use super::Store;
use super::commit::{Op, Outcome};

impl Store {
    /// Logs, now, a `key.anomaly` event for each anomaly found since the last check (the
    /// flusher does the same once per flush interval): every verify that returned before
    /// this call is taken into account. Returns how many events it logged.
    ///
    /// # Errors
    /// When the events cannot be made durable.
    pub fn check_anomalies(&self) -> Result<u32> {
        // A round trip through the commit thread: it drains the uses handed off so far
        // into the detector before it answers.
        self.submit(Op::Anomalies(Vec::new()))?;
        let found = self.shared.anomalies.check(self.shared.clock.now_ms());
        if found.is_empty() {
            return Ok(0);
        }
        match self.submit(Op::Anomalies(found))? {
            Outcome::Count(n) => Ok(n),
            _ => Err(Error::UnexpectedReply {
                request: "anomaly check",
            }),
        }
    }

    /// The anomalies logged from `since` to before `until` (unix ms) about `subject`: a
    /// key's, an owner's keys', a project's keys', or every one (with `guessing`, which
    /// is about a network), oldest first. Read from the index's own list of them, not the
    /// log: as fast with a billion uses logged as with none.
    ///
    /// # Errors
    /// When the index cannot be read.
    pub fn anomalies_of(&self, subject: &UsageSubject, since: i64, until: i64) -> Result<Vec<LoggedAnomaly>> {
        let index = &self.shared.index;
        let mut out = Vec::new();
        for (at, key_id, anomaly) in index.anomalies(since, until)? {
            let wanted = match (subject, &key_id) {
                (UsageSubject::All, _) => true,
                (_, None) => false,
                (UsageSubject::Key(k), Some(id)) => k == id,
                (UsageSubject::Owner(o), Some(id)) => index.owner_of(id)?.is_some_and(|owner| &owner == o),
                (UsageSubject::Project(p), Some(id)) => index.get(id)?.is_some_and(|k| &k.record.project == p),
            };
            if wanted {
                out.push(LoggedAnomaly { at, key_id, anomaly });
            }
        }
        Ok(out)
    }

    /// The client networks (/24, /48) that presented unknown or malformed keys in the
    /// current hour, most first: at most [`crate::anomaly::Thresholds::sketch_networks`]
    /// of them, each count over by at most its `error` (a top-K sketch, so an attacker's
    /// traffic cannot grow it). Only verifies that gave the client's address count.
    pub fn unknown_key_networks(&self) -> Vec<NetworkCount> {
        self.shared.anomalies.networks(self.shared.clock.now_ms())
    }
}
