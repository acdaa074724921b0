//! Budget leases in the fleet (schema version 2): a host may spend a budget only as far as
//! the fleet has leased it units, and the fleet never leases more than the cap minus what
//! is settled. `docs/FLEET.md` ("Budgets") has the whole protocol; the host's side is
//! `store::leases`.

use super::{Fleet, FleetError, Result};

/// How a budget stands in the fleet, in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetAccount {
    /// Spend no host holds any more: returned leases' spent part, and expired leases whole.
    pub settled: u64,
    /// What hosts hold in leases now (spent or not).
    pub leased: u64,
    /// How many hosts hold a lease.
    pub holders: u32,
    /// How many leases were granted in the period.
    pub grants: u64,
}

/// One lease a host gives back: the budget, the period, and how much of it it did not
/// spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The budget's id (the id of the first key of its rotation chain).
    pub budget_id: String,
    /// The period id.
    pub period: u32,
    /// The units the host did not spend.
    pub unused: u64,
}

/// What the fleet answered a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The units granted (0: the budget has less left than was needed).
    pub granted: u64,
    /// The budget's units settled or leased to any host, this grant included: what the
    /// fleet counts as used.
    pub used: u64,
}

/// What a host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAsk<'a> {
    /// The budget's id.
    pub budget_id: &'a str,
    /// The period id.
    pub period: u32,
    /// The budget's cap.
    pub cap: u64,
    /// The least that is of use (the request's cost): less than this left, nothing is
    /// granted.
    pub need: u64,
    /// What the host would like (about a second of its spend).
    pub want: u64,
}

fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl Fleet {
    /// Leases `host` up to `ask.want` units (at least `ask.need`) of a budget for `ttl`, in
    /// one round trip; grants nothing when the budget has less than `ask.need` left in the
    /// fleet.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn lease(&self, host: &str, ask: &LeaseAsk<'_>, ttl: std::time::Duration) -> Result<Lease> {
        let answer: Vec<i64> = self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "select credstore_lease($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &ask.budget_id,
                        &i64::from(ask.period),
                        &host,
                        &sql_int(ask.cap),
                        &sql_int(ask.need.max(1)),
                        &sql_int(ask.want.max(ask.need).max(1)),
                        &ttl_ms(ttl),
                    ],
                )
                .await?;
            Ok::<Vec<i64>, FleetError>(row.get(0))
        })?;
        let unsigned = |i: usize| answer.get(i).and_then(|v| u64::try_from(*v).ok()).unwrap_or(0);
        Ok(Lease {
            granted: unsigned(0),
            used: unsigned(1),
        })
    }

    /// Extends every unexpired lease of `host` by `ttl` from now; returns the leases that
    /// were extended (budget id, period). A lease not among them has expired: the host
    /// must not spend it any more.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn renew_leases(&self, host: &str, ttl: std::time::Duration) -> Result<Vec<(String, u32)>> {
        let rows = self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "update credstore_leases
                     set expires_at = clock_timestamp() + $2 * interval '1 millisecond'
                     where host = $1 and expires_at >= clock_timestamp()
                     returning budget_id, period",
                    &[&host, &ttl_ms(ttl)],
                )
                .await?;
            Ok::<_, FleetError>(rows)
        })?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX)))
            .collect())
    }

    /// Ends leases of `host`: each one's unused part goes back to its budget, the rest is
    /// settled. One round trip for all.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn release_leases(&self, host: &str, returned: &[Returned]) -> Result<()> {
        if returned.is_empty() {
            return Ok(());
        }
        let budgets: Vec<&str> = returned.iter().map(|r| r.budget_id.as_str()).collect();
        let periods: Vec<i64> = returned.iter().map(|r| i64::from(r.period)).collect();
        let unused: Vec<i64> = returned.iter().map(|r| sql_int(r.unused)).collect();
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "select credstore_release($1, $2, $3, $4)",
                    &[&host, &budgets, &periods, &unused],
                )
                .await?;
            Ok(())
        })
    }

    /// Settles every lease `host` holds as spent (a host starting again does not know
    /// what it spent before it stopped).
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn settle_host(&self, host: &str) -> Result<()> {
        self.run(async {
            let client = self.client().await?;
            client.execute("select credstore_settle_host($1)", &[&host]).await?;
            Ok(())
        })
    }

    /// How budget `budget_id` stands in the fleet in `period`.
    ///
    /// # Errors
    /// PostgreSQL's errors.
    pub fn budget_account(&self, budget_id: &str, period: u32) -> Result<BudgetAccount> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "select coalesce((select settled from credstore_budgets where budget_id = $1 and period = $2), 0),
                            coalesce(sum(granted), 0)::bigint, count(*),
                            coalesce((select grants from credstore_budgets where budget_id = $1 and period = $2), 0)
                     from credstore_leases where budget_id = $1 and period = $2",
                    &[&budget_id, &i64::from(period)],
                )
                .await?;
            let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(BudgetAccount {
                settled: unsigned(row.get(0)),
                leased: unsigned(row.get(1)),
                holders: u32::try_from(row.get::<_, i64>(2)).unwrap_or(u32::MAX),
                grants: unsigned(row.get(3)),
            })
        })
    }
}
