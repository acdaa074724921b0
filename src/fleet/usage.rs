//! The fleet's usage rollups (`credstore_usage`, schema version 3): each host adds its
//! counts once per flush interval in one statement, and a query reads the fleet's sum.

use crate::usage::{DENIALS, Granularity, UsageCounts, UsageSubject};

use super::{Fleet, Result};

/// One bucket's counts of one subject, to add to the fleet's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Whose.
    pub subject: UsageSubject,
    /// The tier.
    pub tier: Granularity,
    /// The bucket's start, unix ms.
    pub bucket: i64,
    /// What to add.
    pub counts: UsageCounts,
}

/// The subject as the table's `subject` column holds it.
fn subject_text(subject: &UsageSubject) -> String {
    let kind = match subject {
        UsageSubject::Key(_) => 'k',
        UsageSubject::Owner(_) => 'o',
        UsageSubject::Project(_) => 'p',
        UsageSubject::All => 'a',
    };
    format!("{kind}:{}", subject.id())
}

/// The tier as the table's `tier` column holds it.
fn tier_text(tier: Granularity) -> &'static str {
    match tier {
        Granularity::Minute => "m",
        Granularity::Hour => "h",
        Granularity::Day => "d",
        Granularity::Month => "M",
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Fleet {
    /// Adds `rows` into the fleet's usage, in one statement (one round trip), whatever
    /// their number. Each (subject, tier, bucket) must appear once.
    ///
    /// # Errors
    /// PostgreSQL's errors (nothing was added then).
    pub fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let subjects: Vec<String> = rows.iter().map(|r| subject_text(&r.subject)).collect();
        let tiers: Vec<&str> = rows.iter().map(|r| tier_text(r.tier)).collect();
        let buckets: Vec<i64> = rows.iter().map(|r| r.bucket).collect();
        let valid: Vec<i64> = rows.iter().map(|r| signed(r.counts.valid)).collect();
        let spent: Vec<i64> = rows.iter().map(|r| signed(r.counts.spent)).collect();
        let denied: Vec<Vec<i64>> = DENIALS
            .iter()
            .map(|code| {
                rows.iter()
                    .map(|r| signed(r.counts.denied.get(code).copied().unwrap_or(0)))
                    .collect()
            })
            .collect();
        let [d0, d1, d2, d3, d4, d5, d6, d7, d8] = &denied[..] else {
            return Ok(());
        };
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "insert into credstore_usage as u (subject, tier, bucket, valid, spent, malformed, not_found,
                         revoked, disabled, expired, forbidden, insufficient_permissions, rate_limited,
                         budget_exhausted)
                     select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                         $12::bigint[], $13::bigint[], $14::bigint[])
                     on conflict (subject, tier, bucket) do update set
                         valid = u.valid + excluded.valid, spent = u.spent + excluded.spent,
                         malformed = u.malformed + excluded.malformed,
                         not_found = u.not_found + excluded.not_found,
                         revoked = u.revoked + excluded.revoked, disabled = u.disabled + excluded.disabled,
                         expired = u.expired + excluded.expired, forbidden = u.forbidden + excluded.forbidden,
                         insufficient_permissions = u.insufficient_permissions + excluded.insufficient_permissions,
                         rate_limited = u.rate_limited + excluded.rate_limited,
                         budget_exhausted = u.budget_exhausted + excluded.budget_exhausted",
                    &[
                        &subjects, &tiers, &buckets, &valid, &spent, d0, d1, d2, d3, d4, d5, d6, d7, d8,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    /// The fleet's counts of `subject` in `tier`, per bucket starting in `from..until`.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn usage(
        &self,
        subject: &UsageSubject,
        tier: Granularity,
        from: i64,
        until: i64,
    ) -> Result<Vec<(i64, UsageCounts)>> {
        let subject = subject_text(subject);
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "select bucket, valid, spent, malformed, not_found, revoked, disabled, expired, forbidden,
                            insufficient_permissions, rate_limited, budget_exhausted
                     from credstore_usage where subject = $1 and tier = $2 and bucket >= $3 and bucket < $4
                     order by bucket",
                    &[&subject, &tier_text(tier), &from, &until],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                    let mut counts = UsageCounts {
                        valid: n(1),
                        spent: n(2),
                        ..UsageCounts::default()
                    };
                    for (i, code) in DENIALS.iter().enumerate() {
                        counts.count(*code, n(3 + i), 0);
                    }
                    (row.get::<_, i64>(0), counts)
                })
                .collect())
        })
    }

    /// Deletes the usage rows of each tier older than its cutoff (unix ms: rows of buckets
    /// starting before it).
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn prune_usage(&self, cutoffs: &[(Granularity, i64)]) -> Result<()> {
        self.run(async {
            let client = self.client().await?;
            for (tier, cutoff) in cutoffs {
                client
                    .execute(
                        "delete from credstore_usage where tier = $1 and bucket < $2",
                        &[&tier_text(*tier), cutoff],
                    )
                    .await?;
            }
            Ok(())
        })
    }
}
