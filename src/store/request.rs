//! A request to verify ([`VerifyRequest`]): the key, what the request costs, and what the
//! host knows of it.

use std::net::IpAddr;

use crate::policy::PermissionQuery;
use crate::token::Env;

/// A request to verify: the key, what the request costs, and what the host knows of it.
#[derive(Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// The presented key.
    pub key: &'a str,
    /// Budget cost (default 1; 0 only checks).
    pub cost: u64,
    /// Rate-limit weight: how many requests this one counts as (default 1).
    pub weight: u32,
    /// The project the request is for, if the host pins one.
    pub project: Option<&'a str>,
    /// The environment the request is for, if the host pins one.
    pub env: Option<Env>,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The `Referer` (or `Origin`) header.
    pub referrer: Option<&'a str>,
    /// The method and path called.
    pub endpoint: Option<(&'a str, &'a str)>,
    /// Permissions the request needs.
    pub require: Option<&'a PermissionQuery>,
}

impl<'a> VerifyRequest<'a> {
    /// A request of cost 1 and weight 1, with nothing else known.
    pub fn new(key: &'a str) -> Self {
        VerifyRequest {
            key,
            cost: 1,
            weight: 1,
            project: None,
            env: None,
            ip: None,
            referrer: None,
            endpoint: None,
            require: None,
        }
    }

    /// Sets the budget cost.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Sets the rate-limit weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Pins the project: a key of another project is `FORBIDDEN`.
    pub fn project(mut self, project: &'a str) -> Self {
        self.project = Some(project);
        self
    }

    /// Pins the environment: a key of the other one is `FORBIDDEN`.
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Sets the client's address.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the referrer.
    pub fn referrer(mut self, referrer: &'a str) -> Self {
        self.referrer = Some(referrer);
        self
    }

    /// Sets the endpoint called.
    pub fn endpoint(mut self, method: &'a str, path: &'a str) -> Self {
        self.endpoint = Some((method, path));
        self
    }

    /// Requires permissions.
    pub fn require(mut self, query: &'a PermissionQuery) -> Self {
        self.require = Some(query);
        self
    }
}

impl std::fmt::Debug for VerifyRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &"<redacted>")
            .field("cost", &self.cost)
            .field("weight", &self.weight)
            .field("project", &self.project)
            .field("env", &self.env)
            .field("ip", &self.ip)
            .field("referrer", &self.referrer)
            .field("endpoint", &self.endpoint)
            .field("require", &self.require)
            .finish()
    }
}
