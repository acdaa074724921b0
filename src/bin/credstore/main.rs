//! `credstore`: the operator CLI. See DESIGN.md's CLI contract.
//!
//! Exit codes: 0 success (for `verify`: the key is valid), 1 `verify` denied the key,
//! 2 bad usage or bad input (nothing was written), 3 store error (I/O, corruption, locked).

/// `println!` through [`output::write_stdout`]: a closed stdout ends the printing quietly
/// instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` through [`output::write_stderr`]: to the CLI's stderr when `credstore serve`
/// runs the command for a CLI.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bridge;
mod credits_cmd;
mod demo;
mod events_cmd;
#[cfg(feature = "fleet")]
mod fleet_cmd;
mod import_cmd;
mod output;
mod owner_cmd;
mod policy_cmd;
mod serve;
mod usage_cmd;
mod vault_cmd;
mod webhook_cmd;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use credstore::policy::{
    EndpointAllowlist, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist, Role, RoleName, User,
};
use credstore::record::KeyKind;
use credstore::redact;
use credstore::{
    Budget, Clock, Config, Env, Error, EventFilter, Expiry, FormatLength, FormatRequest, InputError, KeyId, KeyUpdate,
    ListFilter, NewKey, OpenError, Period, Plan, RateLimit, Status, Store, VerifyRequest, clock, parse_expiry,
};

/// credstore: issue, verify, revoke, rotate and audit API keys in an embedded store.
#[derive(Parser)]
#[command(name = "credstore", version, about)]
struct Cli {
    /// The data directory.
    #[arg(long, global = true, env = "CREDSTORE_DATA", default_value = "./credstore-data")]
    data: PathBuf,
    /// Fleet mode: the PostgreSQL URL of the fleet. `init` and `status` work on it directly,
    /// `serve` keeps its replica in --data, other commands use a throwaway replica.
    #[cfg(feature = "fleet")]
    #[arg(long, global = true, env = "CREDSTORE_FLEET_URL", hide_env_values = true)]
    fleet: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store. Without CREDSTORE_PEPPER it is a development store that keeps its
    /// pepper in DATA/pepper.key.
    Init,
    /// Issue a key; it is printed once. `--from FILE` issues one per line of JSON Lines.
    Create(CreateArgs),
    /// Import keys of another system by the SHA-256 it kept of each (JSON Lines, `-` for
    /// stdin): they verify as they did there, and are re-tagged on their first use.
    Import {
        /// The JSON Lines file, or `-` for stdin: one key per line, {"sha256": HEX or
        /// "sha256_base64": B64, "prefix": "legacy_", "name": ..., plus create's settings}.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a key (`-` reads it from stdin). Exit 0 when valid, 1 when denied.
    Verify {
        /// The key, or `-` to read it from stdin.
        key: String,
        /// The client's IP address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// The Referer header.
        #[arg(long)]
        referrer: Option<String>,
        /// The endpoint called, "METHOD PATH".
        #[arg(long)]
        endpoint: Option<String>,
        /// Required permissions, e.g. "(docs:read OR docs:write) AND users:view".
        #[arg(long)]
        require: Option<String>,
        /// The project the request is for.
        #[arg(long)]
        project: Option<String>,
        /// The environment the request is for.
        #[arg(long, value_parser = Words::<Env>::new(ENVS))]
        env: Option<Env>,
        /// Budget cost of the request (0 only checks).
        #[arg(long, default_value_t = 1)]
        cost: u64,
        /// Rate-limit weight of the request.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys.
    List {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Only this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Only this status: active, disabled, expired or revoked.
        #[arg(long, value_parser = Words::<Status>::new(STATUSES))]
        status: Option<Status>,
        /// Only the keys of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        /// The key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a key's name, metadata, expiry, rate limits, budget, plan, role, permissions or
    /// allowlists; only what is given changes, a list given replaces the key's.
    Update(UpdateArgs),
    /// Disable a key (reversible).
    Disable {
        /// The key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled key.
    Enable {
        /// The key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key, for good: by id, or a leaked key itself with `--key -` (read from
    /// stdin), or many with `--from FILE`.
    Revoke {
        /// The key id.
        #[arg(required_unless_present_any = ["key", "from"], conflicts_with_all = ["key", "from"])]
        id: Option<String>,
        /// Revoke every key of a JSON Lines file (`-` for stdin): one {"id": ...} or
        /// {"key": ...} per line, with an optional "reason". Every line is checked first.
        #[arg(long, value_name = "FILE", conflicts_with = "key")]
        from: Option<PathBuf>,
        /// `-`: read the key itself from stdin, never from the command line, and revoke it
        /// (finding it records no use of it).
        #[arg(long, value_name = "-")]
        key: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a new key with the same settings; the old one dies now or after --grace.
    Rotate {
        /// The key id.
        id: String,
        /// Keep the old key valid this long (e.g. 24h).
        #[arg(long, value_parser = parse_duration_arg)]
        grace: Option<std::time::Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage plans (tiers of rate limits and budgets that keys follow).
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Manage users (owners of personal tokens) and their role per project.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage the store's roles (named permission sets; admin, member, viewer are built in).
    Role {
        #[command(subcommand)]
        action: RoleAction,
    },
    /// List events from the audit log; `audit verify` checks it, `audit export` dumps it.
    Audit(AuditArgs),
    /// Rebuild the index from the log.
    Rebuild,
    /// Fleet mode (`--fleet URL`): the fleet's head and every host's lag.
    #[cfg(feature = "fleet")]
    Status,
    /// Accept the log as it is after restoring the data directory from a backup: write the
    /// head checkpoint (and the witness, CREDSTORE_WITNESS) anew, record it in the log,
    /// rebuild the index. This erases the evidence of a rollback: review the restore first.
    ResetHead {
        /// Why, recorded in the log.
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Walk through issuing, verifying, every denial, revoking and auditing on a
    /// throwaway store.
    Demo,
    /// The change feed: the events after record SEQ, and with --follow the new ones as
    /// they commit.
    Events(events_cmd::EventsArgs),
    /// Owners (customers, teams, tenants): their limits and budget, shared by their keys;
    /// revoke or disable all their keys at once.
    Owner {
        #[command(subcommand)]
        action: owner_cmd::OwnerAction,
    },
    /// A budget's credit this period (a key's or an owner's): add (or take away), or set
    /// what is left; logged.
    Credits {
        #[command(subcommand)]
        action: credits_cmd::CreditsAction,
    },
    /// Usage over time: a key's, an owner's, a project's or the store's decisions by
    /// outcome and the credits they spent, per minute, hour, day or month.
    Usage(usage_cmd::UsageArgs),
    /// Webhooks: endpoints `serve` delivers events to, signed (Standard Webhooks); add
    /// prints the signing secret once.
    Webhook {
        #[command(subcommand)]
        action: webhook_cmd::WebhookAction,
    },
    /// Lifecycle policy of the store, a project or a key format: max lifetime, unused
    /// expiry, least rotation grace; logged.
    Policy {
        #[command(subcommand)]
        action: policy_cmd::PolicyAction,
    },
    /// Provider secrets, encrypted at rest: put (from stdin), get, list, delete, rotate-master.
    Vault {
        #[command(subcommand)]
        action: vault_cmd::VaultAction,
    },
    /// Serve the HTTP sidecar: POST /v1/keys.verify, and the management API for admin keys.
    Serve(serve::ServeArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// A name for the key.
    #[arg(long, required_unless_present = "from")]
    name: Option<String>,
    /// Issue one key per line of a JSON Lines file (`-` for stdin), each line holding
    /// create's settings as the sidecar's POST /v1/api-keys takes them ({"name": ...,
    /// "prefix": ..., "rate_limits": [...], ...}); each key is printed once, as a line of
    /// JSON on stdout. The other flags do not go with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "name", "prefix", "env", "length", "total_length", "no_checksum", "new_format", "project",
        "expires_in", "expires_at", "meta", "rate_limits", "budget", "plan", "user", "role",
        "permissions", "allow_ips", "allow_referrers", "allow_endpoints",
    ])]
    from: Option<PathBuf>,
    /// The key prefix, e.g. sk_live_, cmp_, comp_.
    #[arg(long)]
    prefix: Option<String>,
    /// live or test.
    #[arg(long, value_parser = Words::<Env>::new(ENVS))]
    env: Option<Env>,
    /// Random characters (22 to 64).
    #[arg(long, conflicts_with = "total_length")]
    length: Option<usize>,
    /// The whole key's length, prefix and checksum included (e.g. 32 for comp_ keys).
    #[arg(long)]
    total_length: Option<usize>,
    /// No checksum at the end.
    #[arg(long)]
    no_checksum: bool,
    /// Register a further format for a prefix that already has one (by default a create
    /// must match one of the prefix's registered formats).
    #[arg(long)]
    new_format: bool,
    /// The project.
    #[arg(long)]
    project: Option<String>,
    /// Lifetime: 90d, 12h, 30m, 45s.
    #[arg(long, conflicts_with = "expires_at")]
    expires_in: Option<String>,
    /// Expiry as RFC 3339.
    #[arg(long)]
    expires_at: Option<String>,
    /// Metadata entry K=V (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    #[command(flatten)]
    limits: LimitArgs,
    /// A plan to follow.
    #[arg(long)]
    plan: Option<String>,
    /// The owner (customer, team or tenant) the key belongs to: its limits and budget
    /// apply on top of the key's own (`owner set` first).
    #[arg(long)]
    owner: Option<String>,
    /// service (its own role) or personal (acts with --user's role in the project).
    #[arg(long = "type", value_name = "TYPE", value_enum, default_value_t = KeyType::Service)]
    key_type: KeyType,
    /// The user a personal token belongs to.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    access: AccessArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `create --type`: what kind of identity a key is (see `--type`'s help).
#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyType {
    Service,
    Personal,
}

/// Role, permissions and restrictions, as `create` and `update` take them.
#[derive(Args)]
struct AccessArgs {
    /// A service account's role (admin, member, viewer, or one of the store's roles); a
    /// personal token takes none: it acts with its user's role.
    #[arg(long)]
    role: Option<RoleName>,
    /// A permission beyond the role, resource:action (repeatable; `update` replaces the list).
    #[arg(long = "permission")]
    permissions: Vec<String>,
    /// An allowed client address or CIDR range (repeatable; `update` replaces the list).
    #[arg(long = "allow-ip")]
    allow_ips: Vec<String>,
    /// An allowed referrer host pattern, e.g. *.example.com (repeatable; `update` replaces
    /// the list).
    #[arg(long = "allow-referrer")]
    allow_referrers: Vec<String>,
    /// An allowed endpoint, "METHOD GLOB", e.g. "GET /v1/users/*" (repeatable; `update`
    /// replaces the list).
    #[arg(long = "allow-endpoint")]
    allow_endpoints: Vec<String>,
}

/// Rate limits and a budget, as `create`, `update` and `plan set` take them.
#[derive(Args)]
struct LimitArgs {
    /// A rate limit N/DURATION[:name], e.g. 60/1m or 1000/1h:hourly (repeatable; `update`
    /// replaces the key's own limits).
    #[arg(long = "rate-limit", value_parser = parse_rate_limit)]
    rate_limits: Vec<RateLimit>,
    /// A budget cap per period (an integer amount of cost units).
    #[arg(long)]
    budget: Option<u64>,
    /// The budget period: monthly, monthly:DAY (anchor day), daily or total.
    #[arg(long, default_value = "monthly", requires = "budget", value_parser = Words::<Period>::new(PERIODS))]
    budget_period: Period,
}

impl LimitArgs {
    fn budget(&self) -> Result<Option<Budget>, Failure> {
        Ok(self
            .budget
            .map(|cap| Budget::new(cap, self.budget_period))
            .transpose()?)
    }
}

#[derive(Subcommand)]
enum PlanAction {
    /// Create or replace a plan; keys on it follow the new limits at once.
    Set {
        /// The plan's name.
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List plans.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a plan no key follows.
    Delete {
        /// The plan's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create or replace a user with their memberships.
    Set {
        /// The user's id.
        id: String,
        /// A membership PROJECT=ROLE (repeatable).
        #[arg(long = "member", value_parser = parse_meta)]
        memberships: Vec<(String, String)>,
    },
    /// Remove a user; their personal tokens are refused from then on.
    Remove {
        /// The user's id.
        id: String,
    },
    /// List users.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RoleAction {
    /// Create or replace a role.
    Set {
        /// The role's name.
        name: String,
        /// A permission, resource:action (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// Delete a role no key or user has.
    Delete {
        /// The role's name.
        name: String,
    },
    /// List roles.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct UpdateArgs {
    /// The key id.
    id: String,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    /// Metadata entry K=V (repeatable); replaces all metadata.
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Remove all metadata.
    #[arg(long, conflicts_with = "meta")]
    clear_meta: bool,
    /// New lifetime from now: 90d, 12h, 30m, 45s.
    #[arg(long, conflicts_with_all = ["expires_at", "no_expiry"])]
    expires_in: Option<String>,
    /// New expiry as RFC 3339.
    #[arg(long, conflicts_with = "no_expiry")]
    expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    no_expiry: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// Remove the key's own rate limits.
    #[arg(long, conflicts_with = "rate_limits")]
    clear_rate_limits: bool,
    /// Remove the key's own budget.
    #[arg(long, conflicts_with = "budget")]
    no_budget: bool,
    /// Put the key on a plan.
    #[arg(long)]
    plan: Option<String>,
    /// Take the key off its plan.
    #[arg(long, conflicts_with = "plan")]
    no_plan: bool,
    #[command(flatten)]
    access: AccessArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AuditArgs {
    #[command(subcommand)]
    action: Option<AuditAction>,
    /// Only events of this key.
    #[arg(long)]
    key: Option<String>,
    /// Only events of this kind (key.created, key.revoked, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only events at or after this time: RFC 3339, a date (2026-12-02, from midnight
    /// UTC), or a duration before now (1h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time, in the forms --since takes.
    #[arg(long)]
    until: Option<String>,
    /// Newest first.
    #[arg(long)]
    newest_first: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the whole log: exit 0 only for an intact log, else name the first bad record.
    Verify,
    /// Write every event as JSON Lines.
    Export,
}

/// A CLI failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Input(_) | Error::State(_) => 2,
            Error::Open(OpenError::NotAStore(_) | OpenError::AlreadyExists(_))
            | Error::Open(OpenError::MissingPepper | OpenError::WrongPepper) => 2,
            // Like a missing pepper: configuration the command needs, nothing written.
            Error::Vault(credstore::vault::VaultError::NoMasterKey) => 2,
            _ => 3,
        };
        let mut message = e.to_string();
        if matches!(e, Error::Open(OpenError::Locked(_))) {
            message.push_str(&format!(
                " for longer than the lock wait (CREDSTORE_LOCK_WAIT, {}s by default); \
                 `credstore serve` holds it for as long as it runs, and takes the CLI's commands \
                 on DATA/serve.sock once it has opened the store",
                credstore::DEFAULT_LOCK_WAIT.as_secs()
            ));
        }
        Failure { code, message }
    }
}

#[cfg(feature = "fleet")]
impl From<credstore::fleet::FleetError> for Failure {
    fn from(e: credstore::fleet::FleetError) -> Self {
        Failure::from(Error::from(e))
    }
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure::from(Error::from(e))
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(&e),
    };
    let result = run(cli);
    // Output cut short by anything but a closed pipe fails a command that otherwise
    // succeeded; a failure already on its way is the one to report.
    let result = match (result, output::stdout_failure()) {
        (Ok(_), Some(e)) => Err(Failure {
            code: 3,
            message: format!("cannot write to stdout: {e}"),
        }),
        (result, _) => result,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Reports a command line clap refused. clap's messages repeat the offending argument
/// (`invalid value 'X' for '--ip <IP>'`, `unexpected argument 'X'`), so they are scrubbed
/// of secret-shaped tokens first; help and version go out as clap writes them.
fn clap_failure(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // A closed pipe leaves no one to tell.
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    let rendered = e.render();
    let text = if std::io::stderr().is_terminal() {
        rendered.ansi().to_string()
    } else {
        rendered.to_string()
    };
    eprint!("{}", redact::scrub(&text));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    #[cfg(feature = "fleet")]
    if let Some(url) = cli.fleet {
        return fleet_cmd::run(url, cli.command, &cli.data);
    }
    // A running `credstore serve` holds the store: it runs the command (bridge.rs).
    if let Some(result) = bridge::through_server(&cli.data, &cli.command) {
        return result;
    }
    run_on(cli.data, cli.command)
}

/// Runs `command` on the store in `data` (a fleet host's replica when `--fleet` is given).
fn run_on(data: PathBuf, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Init => {
            let config = Config::from_env()?;
            let dev = config.pepper.is_none();
            let store = Store::init(&data, config)?;
            outln!("Initialised a credstore store in {}", data.display());
            if dev {
                outln!(
                    "Development store: its pepper is in {}. In production, set CREDSTORE_PEPPER instead.",
                    data.join("pepper.key").display()
                );
            }
            let admin = store.create(NewKey::new("bootstrap admin").role(RoleName::parse("admin")?))?;
            outln!();
            outln!(
                "Bootstrap admin key {} for `credstore serve`'s management API:",
                admin.record.id
            );
            outln!();
            outln!("    {}", admin.key.expose());
            outln!();
            outln!("Copy it now: it is shown only once and cannot be recovered.");
            store.close()?;
            Ok(0)
        }
        Command::Create(args) => match &args.from {
            Some(file) => import_cmd::create_from(&data, file),
            None => create(&data, args),
        },
        Command::Import { file, json } => import_cmd::import(&data, &file, json),
        Command::Verify {
            key,
            ip,
            referrer,
            endpoint,
            require,
            project,
            env,
            cost,
            weight,
            json,
        } => {
            let key = if key == "-" { read_stdin_line()? } else { key };
            let require = require.as_deref().map(PermissionQuery::parse).transpose()?;
            let endpoint = endpoint
                .as_deref()
                .map(|e| {
                    e.trim()
                        .split_once(' ')
                        .ok_or_else(|| usage("--endpoint takes \"METHOD PATH\""))
                })
                .transpose()?;
            let mut req = VerifyRequest::new(key.trim()).cost(cost).weight(weight);
            req.ip = ip;
            req.referrer = referrer.as_deref();
            req.endpoint = endpoint.map(|(m, p)| (m, p.trim()));
            req.require = require.as_ref();
            req.project = project.as_deref();
            req.env = env;
            let store = command_store(&data)?;
            let decision = store.verify_with(&req)?;
            output::print_decision(&decision, json);
            store.close()?;
            Ok(if decision.is_valid() { 0 } else { 1 })
        }
        Command::List {
            project,
            prefix,
            status,
            owner,
            json,
        } => {
            let store = command_store(&data)?;
            let keys = store.list(&ListFilter {
                project,
                prefix,
                status,
                owner,
            })?;
            output::print_list(&keys, json);
            Ok(0)
        }
        Command::Show { id, json } => {
            let store = command_store(&data)?;
            let info = store.get(&KeyId::parse(&id)?)?;
            output::print_info(&info, json);
            Ok(0)
        }
        Command::Update(args) => update(&data, args),
        Command::Disable { id, json } => {
            let store = command_store(&data)?;
            let info = store.disable(&KeyId::parse(&id)?)?;
            output::print_info(&info, json);
            Ok(0)
        }
        Command::Enable { id, json } => {
            let store = command_store(&data)?;
            let info = store.enable(&KeyId::parse(&id)?)?;
            output::print_info(&info, json);
            Ok(0)
        }
        Command::Revoke {
            from: Some(file),
            reason,
            yes,
            json,
            ..
        } => import_cmd::revoke_from(&data, &file, reason.as_deref(), yes, json),
        Command::Revoke {
            id,
            key,
            reason,
            yes,
            json,
            from: None,
        } => {
            let (store, current) = match (id, key) {
                (Some(id), None) => {
                    let id = KeyId::parse(&id)?;
                    let store = command_store(&data)?;
                    let current = store.get(&id)?;
                    (store, current)
                }
                (None, Some(dash)) if dash == "-" => {
                    let presented = zeroize::Zeroizing::new(read_stdin_line()?);
                    let store = command_store(&data)?;
                    let current = store.find_by_key(presented.trim())?.ok_or_else(|| {
                        usage("the key read from stdin is not a key of this store (malformed, or unknown)")
                    })?;
                    (store, current)
                }
                (None, Some(_)) => {
                    return Err(usage(
                        "--key takes only `-`: the key is read from stdin, never from the command line \
                         (where shell history and the process list keep it)",
                    ));
                }
                _ => return Err(usage("revoke takes a key id, or --key - with the key on stdin")),
            };
            let id = current.record.id.clone();
            if !yes && stdin_is_terminal() && !confirm(&current.record.name, &id)? {
                return Err(usage("revocation cancelled"));
            }
            let info = store.revoke(&id, reason.as_deref())?;
            output::print_info(&info, json);
            Ok(0)
        }
        Command::Rotate { id, grace, json } => {
            let store = command_store(&data)?;
            let rotated = store.rotate(&KeyId::parse(&id)?, grace)?;
            let doc = output::docs::CreatedDoc::rotated(&rotated);
            if json {
                outln!("{}", output::to_json(&doc));
            } else {
                output::print_created(&rotated.new, false, Some(&rotated.old));
                if let Some(raised) = doc.grace_raised_to {
                    outln!("The grace asked for was below the lifecycle policy's least grace: raised to {raised}.");
                }
            }
            Ok(0)
        }
        Command::Plan { action } => plan(&data, action),
        Command::User { action } => user(&data, action),
        Command::Role { action } => role(&data, action),
        Command::Audit(args) => audit(&data, args),
        Command::Rebuild => {
            let last = Store::rebuild(&data, store_config()?)?;
            outln!("Rebuilt the index from {last} log records.");
            Ok(0)
        }
        Command::ResetHead { reason, yes } => {
            if !yes {
                if !stdin_is_terminal() {
                    return Err(usage(
                        "reset-head asks for confirmation: pass --yes when stdin is not a terminal",
                    ));
                }
                output::write_stderr(format_args!(
                    "Accept the log in {} as it is? This erases the evidence of a rollback or a rewrite. [y/N] ",
                    data.display()
                ));
                let answer = read_stdin_line()?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
                    return Err(usage("reset-head cancelled"));
                }
            }
            let seq = Store::reset_head(&data, store_config()?, reason.as_deref())?;
            outln!("The head checkpoint now vouches for record {seq}; the index was rebuilt from the log.");
            Ok(0)
        }
        #[cfg(feature = "fleet")]
        Command::Status => Err(usage(
            "status reports on a fleet: give --fleet URL (or CREDSTORE_FLEET_URL)",
        )),
        Command::Demo => demo::run().map(|()| 0),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "credstore", &mut script);
            output::write_stdout_bytes(&script);
            Ok(0)
        }
        Command::Serve(args) => serve::run(&data, args),
        Command::Credits { action } => credits_cmd::run(&data, action),
        Command::Usage(args) => usage_cmd::run(&data, args),
        Command::Owner { action } => owner_cmd::run(&data, action),
        Command::Policy { action } => policy_cmd::run(&data, action),
        Command::Events(args) => events_cmd::run(&data, args),
        Command::Vault { action } => vault_cmd::run(&data, action),
        Command::Webhook { action } => webhook_cmd::run(&data, action),
    }
}

/// The configuration every command opens its store with: the environment's, and the
/// fleet's URL when `--fleet` made this process a fleet host.
fn store_config() -> Result<Config, Failure> {
    let config = Config::from_env()?;
    #[cfg(feature = "fleet")]
    if let Some((url, host, serving)) = fleet_cmd::FLEET.get() {
        let mut config = config.fleet(url.clone(), host.clone());
        // Only `serve` is a host proper: a one-shot command's throwaway replica is passive
        // (no part of the rate limits) and does not listen (nothing to gain from it).
        config.fleet_passive = !*serving;
        config.fleet_listen &= *serving;
        return Ok(config);
    }
    Ok(config)
}

/// Opens the store in `data` in this process (and with it the store's lock).
fn open(data: &Path) -> Result<Store, Failure> {
    let store = Store::open(data, store_config()?)?;
    let report = store.recovery_report();
    if report.truncated_bytes > 0 {
        errln!(
            "note: recovered the log: truncated a torn tail of {} bytes (an unacknowledged write)",
            report.truncated_bytes
        );
    }
    if let Some(why) = &report.index_rebuilt {
        errln!("note: the index could not be read ({why}): set aside as index.broken and rebuilt from the log");
    }
    Ok(store)
}

/// The store a command acts on: the server's, when `credstore serve` runs the command for
/// a CLI (`bridge.rs`); else the store in `data`, opened here.
fn command_store(data: &Path) -> Result<CommandStore, Failure> {
    match bridge::store() {
        Some(served) => Ok(CommandStore::Served(served)),
        None => open(data).map(CommandStore::Opened),
    }
}

/// See [`command_store`].
enum CommandStore {
    /// Opened by this command.
    Opened(Store),
    /// `credstore serve`'s, open for as long as the server runs.
    Served(Arc<Store>),
}

impl CommandStore {
    /// Closes a store this command opened (which flushes its counters); the server's stays
    /// open.
    fn close(self) -> credstore::Result<()> {
        match self {
            CommandStore::Opened(store) => store.close(),
            CommandStore::Served(_) => Ok(()),
        }
    }
}

impl std::ops::Deref for CommandStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        match self {
            CommandStore::Opened(store) => store,
            CommandStore::Served(store) => store,
        }
    }
}

/// The format of a new key, as `create` and the sidecar choose it: for a service
/// account with the admin role and no shape asked for, the admin keys' format (the store
/// refuses any other for it); else [`credstore::FormatSet::choose`].
fn new_key_format(
    formats: &credstore::FormatSet,
    role: Option<&RoleName>,
    request: &FormatRequest<'_>,
) -> Result<credstore::Format, InputError> {
    let admin = role.is_some_and(|r| r.as_str() == credstore::policy::ADMIN_ROLE);
    let asks_nothing = request.prefix.is_none()
        && request.env.is_none()
        && request.length.is_none()
        && !request.no_checksum
        && !request.new_format;
    if admin && asks_nothing {
        return Ok(credstore::Format::admin());
    }
    formats.choose(request)
}

fn create(data: &Path, args: CreateArgs) -> Result<u8, Failure> {
    let name = args.name.ok_or_else(|| usage("create takes --name, or --from FILE"))?;
    let store = command_store(data)?;
    let length = match (args.length, args.total_length) {
        (Some(n), _) => Some(FormatLength::Random(n)),
        (None, Some(n)) => Some(FormatLength::Total(n)),
        (None, None) => None,
    };
    let format = new_key_format(
        &store.formats(),
        args.access.role.as_ref(),
        &FormatRequest {
            prefix: args.prefix.as_deref(),
            env: args.env,
            length,
            no_checksum: args.no_checksum,
            new_format: args.new_format,
        },
    )?;
    let mut new = NewKey::new(name).format(format);
    new.project = args.project;
    new.metadata = args.meta.into_iter().collect();
    new.budget = args.limits.budget()?;
    new.rate_limits = args.limits.rate_limits;
    new.plan = args.plan;
    new.owner = args.owner;
    new.kind = match (args.key_type, args.user) {
        (KeyType::Service, None) => KeyKind::Service,
        (KeyType::Personal, Some(user)) => KeyKind::Personal { user },
        (KeyType::Personal, None) => return Err(InputError::KeyType("a personal token needs --user".into()).into()),
        (KeyType::Service, Some(_)) => {
            return Err(InputError::KeyType("--user is for personal tokens (--type personal)".into()).into());
        }
    };
    let access = args.access;
    new.role = access.role.clone();
    new.permissions = PermissionSet::parse(&access.permissions)?;
    new.allow_ips = IpAllowlist::new(&access.allow_ips)?;
    new.allow_referrers = ReferrerAllowlist::new(&access.allow_referrers)?;
    new.allow_endpoints = EndpointAllowlist::new(&access.allow_endpoints)?;
    new.expires = match (args.expires_in, args.expires_at) {
        (Some(d), _) => Some(Expiry::In(clock::parse_duration(&d)?)),
        (None, Some(t)) => Some(Expiry::At(clock::parse_time(&t)?)),
        (None, None) => None,
    };
    let created = store.create(new)?;
    output::print_created(&created, args.json, None);
    store.close()?;
    Ok(0)
}

fn update(data: &Path, args: UpdateArgs) -> Result<u8, Failure> {
    let id = KeyId::parse(&args.id)?;
    let expires = if args.no_expiry {
        Some(None)
    } else if let Some(d) = &args.expires_in {
        Some(Some(Expiry::In(clock::parse_duration(d)?)))
    } else if let Some(t) = &args.expires_at {
        Some(Some(parse_expiry(t)?))
    } else {
        None
    };
    let metadata = if args.clear_meta {
        Some(BTreeMap::new())
    } else if args.meta.is_empty() {
        None
    } else {
        Some(args.meta.into_iter().collect())
    };
    let rate_limits = if args.clear_rate_limits {
        Some(Vec::new())
    } else if args.limits.rate_limits.is_empty() {
        None
    } else {
        Some(args.limits.rate_limits.clone())
    };
    let budget = if args.no_budget {
        Some(None)
    } else {
        args.limits.budget()?.map(Some)
    };
    let plan = if args.no_plan { Some(None) } else { args.plan.map(Some) };
    let access = &args.access;
    fn list(v: &[String]) -> Option<&[String]> {
        (!v.is_empty()).then_some(v)
    }
    let update = KeyUpdate {
        name: args.name,
        metadata,
        expires,
        rate_limits,
        budget,
        plan,
        role: access.role.clone(),
        permissions: list(&access.permissions).map(PermissionSet::parse).transpose()?,
        allow_ips: list(&access.allow_ips).map(IpAllowlist::new).transpose()?,
        allow_referrers: list(&access.allow_referrers).map(ReferrerAllowlist::new).transpose()?,
        allow_endpoints: list(&access.allow_endpoints).map(EndpointAllowlist::new).transpose()?,
    };
    if update.is_empty() {
        return Err(usage("nothing to update: see `credstore update --help`"));
    }
    let store = command_store(data)?;
    let info = store.update(&id, update)?;
    output::print_info(&info, args.json);
    Ok(0)
}

fn plan(data: &Path, action: PlanAction) -> Result<u8, Failure> {
    let store = command_store(data)?;
    match action {
        PlanAction::Set { name, limits } => {
            let budget = limits.budget()?;
            let plan = Plan::new(name, limits.rate_limits, budget)?;
            store.set_plan(plan.clone())?;
            outln!("Plan {} set: {}", plan.name, output::plan_summary(&plan));
        }
        PlanAction::List { json } => output::print_plans(&store.plans(), json),
        PlanAction::Delete { name } => {
            store.delete_plan(&name)?;
            outln!("Plan {name} deleted.");
        }
    }
    store.close()?;
    Ok(0)
}

fn user(data: &Path, action: UserAction) -> Result<u8, Failure> {
    let store = command_store(data)?;
    match action {
        UserAction::Set { id, memberships } => {
            let mut user = User::new(id)?;
            for (project, role) in memberships {
                user.memberships.insert(project, RoleName::parse(&role)?);
            }
            store.set_user(user.clone())?;
            outln!("User {} set: {} membership(s)", user.id, user.memberships.len());
        }
        UserAction::Remove { id } => {
            store.remove_user(&id)?;
            outln!("User {id} removed: their personal tokens are refused from now on.");
        }
        UserAction::List { json } => output::print_users(&store.users(), json),
    }
    store.close()?;
    Ok(0)
}

fn role(data: &Path, action: RoleAction) -> Result<u8, Failure> {
    let store = command_store(data)?;
    match action {
        RoleAction::Set { name, permissions } => {
            let role = Role::new(RoleName::parse(&name)?, PermissionSet::parse(&permissions)?);
            store.set_role(role)?;
            outln!("Role {name} set.");
        }
        RoleAction::Delete { name } => {
            store.delete_role(&name)?;
            outln!("Role {name} deleted.");
        }
        RoleAction::List { json } => output::print_roles(&store.roles(), json),
    }
    store.close()?;
    Ok(0)
}

fn audit(data: &Path, args: AuditArgs) -> Result<u8, Failure> {
    let store = command_store(data)?;
    match args.action {
        Some(AuditAction::Verify) => match verify_with_bar(&store) {
            Ok(check) if check.index_differs.is_empty() => {
                outln!("log intact: {} records, {} bytes", check.records, check.bytes);
                outln!("index agrees with the log");
                Ok(0)
            }
            Ok(check) => Err(Failure {
                code: 3,
                message: format!(
                    "log intact ({} records), but the index holds a state the log does not produce for {} key(s): {}; run `credstore rebuild`",
                    check.records,
                    check.index_differs.len(),
                    check.index_differs.join(", ")
                ),
            }),
            Err(e) => Err(Failure {
                code: 3,
                message: format!("log check failed: {e}"),
            }),
        },
        Some(AuditAction::Export) => {
            let events = store.events(&EventFilter::default())?;
            let bar = progress_bar(events.len() as u64, "exporting");
            for (seq, event) in &events {
                outln!("{}", event.to_json(*seq));
                bar.inc(1);
            }
            bar.finish_and_clear();
            Ok(0)
        }
        None => {
            let now = clock::SystemClock.now_ms();
            let filter = EventFilter {
                key: args.key.as_deref().map(KeyId::parse).transpose()?,
                kind: args.kind,
                since: args
                    .since
                    .as_deref()
                    .map(|t| clock::parse_instant(t, now))
                    .transpose()?,
                until: args
                    .until
                    .as_deref()
                    .map(|t| clock::parse_instant(t, now))
                    .transpose()?,
                newest_first: args.newest_first,
            };
            let events = store.events(&filter)?;
            output::print_events(&events, args.json);
            Ok(0)
        }
    }
}

/// A progress bar on stderr when it is a terminal and the work is large; hidden otherwise,
/// and for a command the server runs for a CLI (the bar would draw on the server's stderr).
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if bridge::is_served() || !std::io::stderr().is_terminal() || total < 10_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent}% {eta}") {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn verify_with_bar(store: &Store) -> Result<credstore::LogCheck, Error> {
    let bar = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let result = store.verify_log_with_progress(|done, total| {
        let mut slot = bar.borrow_mut();
        let b = slot.get_or_insert_with(|| progress_bar(total / 1024, "verifying (KiB)"));
        b.set_position(done / 1024);
    });
    if let Some(b) = bar.into_inner() {
        b.finish_and_clear();
    }
    result
}

fn confirm(name: &str, id: &KeyId) -> Result<bool, Failure> {
    output::write_stderr(format_args!("Revoke key {id} ({name})? This cannot be undone. [y/N] "));
    let answer = read_stdin_line()?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Reads a line from stdin (the CLI's, for a command the server runs for it).
fn read_stdin_line() -> Result<String, Failure> {
    let mut line = String::new();
    let read = bridge::with_stdin(|input| input.read_line(&mut line))
        .unwrap_or_else(|| std::io::stdin().lock().read_line(&mut line));
    read.map_err(|e| usage(format!("cannot read stdin: {e}")))?;
    Ok(line)
}

/// Whether stdin is a terminal; never for a command the server runs for a CLI (the CLI
/// sent what the command reads).
fn stdin_is_terminal() -> bool {
    !bridge::is_served() && std::io::stdin().is_terminal()
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected K=V, got {}", redact::quote(text)))
}

fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    RateLimit::parse(text).map_err(|e| e.to_string())
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    clock::parse_duration(text)
        .map(|ms| std::time::Duration::from_millis(ms.unsigned_abs()))
        .map_err(|e| format!("{e}: give a whole number above 0 and a unit, e.g. 500ms, 10s, 5m, 1h"))
}

/// A flag's value parsed by `T`'s `FromStr`, with the words it takes offered to shell
/// completions and listed in help: clap's own value enums cannot say `monthly:DAY`, nor
/// parse into the library's types.
#[derive(Clone)]
struct Words<T> {
    words: &'static [&'static str],
    parses: std::marker::PhantomData<fn() -> T>,
}

impl<T> Words<T> {
    /// The words a flag offers.
    const fn new(words: &'static [&'static str]) -> Self {
        Words {
            words,
            parses: std::marker::PhantomData,
        }
    }
}

impl<T> clap::builder::TypedValueParser for Words<T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        clap::builder::StringValueParser::new()
            .try_map(|text| text.parse::<T>())
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.words.iter().map(|&w| clap::builder::PossibleValue::new(w)),
        ))
    }
}

/// `--status`.
const STATUSES: &[&str] = &["active", "disabled", "expired", "revoked"];
/// `--env`.
const ENVS: &[&str] = &["live", "test"];
/// `--budget-period`; `monthly:DAY` parses too.
const PERIODS: &[&str] = &["monthly", "daily", "total"];
