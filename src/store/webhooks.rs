//! Webhooks on a [`Store`] (registration, removal, signing secrets, delivery attempts) and
//! the in-process subscription to the change feed ([`Subscription`]).
//!
//! The store keeps what a webhook is and how far it was delivered (both from the log: the
//! `webhook.added`, `webhook.removed` and `webhook.attempt` events); `credstore serve`
//! does the delivering. A webhook's signing secret is never stored: it is keyed BLAKE3 of
//! the webhook's id under a key derived from the store's pepper, so the store can sign
//! with it after any restart and nothing on disk holds it.

use std::collections::VecDeque;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::{Error, Result, StateError};
use crate::event::Event;
use crate::secret::Secret;
use crate::webhook::{self, EventKinds, Position, Webhook, WebhookId, WebhookUrl};

use super::Store;
use super::commit::{Op, Outcome};

/// What derives the webhook signing key from the pepper (BLAKE3 `derive_key` context).
const SECRET_CONTEXT: &str = "credstore 2026 webhook signing secret v1";
/// Records read per round by a [`Subscription`] and by [`Store::events_from`]'s callers.
const FEED_BATCH: usize = 256;

/// One attempt to deliver an event to a webhook, as [`Store::webhook_attempt`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The event tried.
    pub event: Position,
    /// The attempt's number for this event (1 for the first).
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What went wrong, when it failed.
    pub error: Option<String>,
    /// The receiver took it: the webhook's delivery position moves to `event`.
    pub delivered: bool,
}

impl Store {
    /// Registers a webhook for the events of `kinds` that commit from now on, delivered to
    /// `url` by `credstore serve`; logged as `webhook.added`. Returns the webhook and its
    /// signing secret (`whsec_` + base64), to be shown once.
    ///
    /// # Errors
    /// [`crate::InputError::InvalidWebhook`] for a bad URL or kind; [`Error::NotCommitted`]
    /// and storage errors when the change could not be made durable.
    pub fn webhook_add<S: AsRef<str>>(&self, url: &str, kinds: &[S]) -> Result<(Webhook, Secret)> {
        let url = WebhookUrl::parse(url)?;
        let kinds = EventKinds::parse(kinds)?;
        let id = WebhookId::random();
        self.expect_done(Op::WebhookAdd {
            id: id.clone(),
            url: url.as_str().to_string(),
            kinds,
        })?;
        let webhook = self.webhook(&id)?;
        Ok((webhook, self.webhook_secret(&id)))
    }

    /// Every registered webhook, by id.
    ///
    /// # Errors
    /// When the index cannot be read.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.shared.index.webhooks()
    }

    /// One registered webhook.
    ///
    /// # Errors
    /// [`StateError::UnknownWebhook`]; when the index cannot be read.
    pub fn webhook(&self, id: &WebhookId) -> Result<Webhook> {
        self.shared
            .index
            .webhook(id)?
            .ok_or_else(|| StateError::UnknownWebhook(id.to_string()).into())
    }

    /// Removes a webhook: nothing more is delivered to it. Logged as `webhook.removed`.
    ///
    /// # Errors
    /// [`StateError::UnknownWebhook`]; as [`Store::webhook_add`].
    pub fn webhook_remove(&self, id: &WebhookId) -> Result<()> {
        self.expect_done(Op::WebhookRemove(id.clone()))
    }

    /// A webhook's signing secret, `whsec_` + base64 of 32 bytes: keyed BLAKE3 of its id
    /// under a key derived from the pepper (the same on every host sharing the pepper,
    /// after every restart; never stored).
    pub fn webhook_secret(&self, id: &WebhookId) -> Secret {
        let key = Zeroizing::new(blake3::derive_key(SECRET_CONTEXT, self.shared.pepper.bytes()));
        let secret = Zeroizing::new(*blake3::keyed_hash(&key, id.as_str().as_bytes()).as_bytes());
        Secret::new(webhook::secret_text(&*secret))
    }

    /// Records one delivery attempt as a `webhook.attempt` event; a delivered one moves the
    /// webhook's position (`Webhook::delivered`) to the event, durably.
    ///
    /// # Errors
    /// [`StateError::UnknownWebhook`] when it was removed; as [`Store::webhook_add`].
    pub fn webhook_attempt(&self, id: &WebhookId, attempt: Attempt) -> Result<()> {
        let error = attempt
            .error
            .map(|e| crate::redact::scrub(&e).chars().take(512).collect());
        self.expect_done(Op::WebhookAttempt {
            id: id.clone(),
            event: attempt.event,
            attempt: attempt.attempt,
            status: attempt.status,
            error,
            delivered: attempt.delivered,
        })
    }

    /// The change feed by event: the events after position `after`, oldest first, from at
    /// most `max_records` records, each with its position (record and place in it).
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn events_from(&self, after: Position, max_records: usize) -> Result<Vec<(Position, Event)>> {
        // A record not read whole yet is read again from its start.
        let from = if after.part == u32::MAX {
            after.seq
        } else {
            after.seq.saturating_sub(1)
        };
        let mut out = Vec::new();
        let mut last: Option<(u64, u32)> = None;
        for (seq, event) in self.events_after(from, max_records)? {
            let part = match last {
                Some((s, p)) if s == seq => p.saturating_add(1),
                _ => 0,
            };
            last = Some((seq, part));
            let at = Position { seq, part };
            if at > after {
                out.push((at, event));
            }
        }
        Ok(out)
    }

    /// An in-process subscription to the change feed: every event after record `after`
    /// (0: from the first), in order, waiting for new ones as they commit.
    pub fn subscribe(&self, after: u64) -> Subscription<'_> {
        Subscription {
            store: self,
            after: Position::end_of(after),
            ready: VecDeque::new(),
        }
    }

    /// Submits `op` and expects [`Outcome::Done`].
    fn expect_done(&self, op: Op) -> Result<()> {
        match self.submit(op)? {
            Outcome::Done => Ok(()),
            _ => Err(Error::UnexpectedReply { request: "webhook" }),
        }
    }
}

/// A subscription to the change feed ([`Store::subscribe`]): the events after a record,
/// oldest first, each once, waiting for new ones as they commit. As an [`Iterator`] it
/// blocks until the next event and never ends (a read error is yielded, and the next call
/// tries again); use [`Subscription::next_timeout`] to wait a bounded time.
pub struct Subscription<'a> {
    store: &'a Store,
    /// The last event handed out (or skipped past).
    after: Position,
    /// Events read and not handed out yet.
    ready: VecDeque<(Position, Event)>,
}

impl Subscription<'_> {
    /// The next event, waiting up to `timeout` for one to commit; `None` when none came.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<(u64, Event)>> {
        if let Some(next) = self.take() {
            return Ok(Some(next));
        }
        self.fill()?;
        if self.ready.is_empty() {
            self.store.wait_for_record(self.after.seq, timeout);
            self.fill()?;
        }
        Ok(self.take())
    }

    /// The last event handed out: its record, and its place in it (a `key.uses` record
    /// holds one event per use). [`Store::events_from`] resumes from it.
    pub fn position(&self) -> Position {
        self.after
    }

    fn take(&mut self) -> Option<(u64, Event)> {
        let (at, event) = self.ready.pop_front()?;
        self.after = at;
        Some((at.seq, event))
    }

    fn fill(&mut self) -> Result<()> {
        let from = self.ready.back().map_or(self.after, |(at, _)| *at);
        self.ready.extend(self.store.events_from(from, FEED_BATCH)?);
        Ok(())
    }
}

impl Iterator for Subscription<'_> {
    type Item = Result<(u64, Event)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(1)) {
                Ok(Some(next)) => return Some(Ok(next)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
