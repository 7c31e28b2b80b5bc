//! The allocator: offers agents' free resources to frameworks by weighted Dominant Resource
//! Fairness, first across roles, then across the frameworks of a role.
//!
//! It holds the allocation state and changes it only through the methods below; it never does
//! I/O and takes the time as an argument (milliseconds on any monotonic clock). Offered resources
//! count as allocated until they are accepted (and stay, as used), declined, rescinded or
//! recovered, so nothing is ever offered twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::resources::{Milli, Resources};
use crate::roles::{Role, RoleConfig};

pub type AgentId = String;
pub type FrameworkId = String;
pub type OfferId = u64;

/// The largest role weight: shares times weights stay far from overflowing.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub id: OfferId,
    pub framework: FrameworkId,
    pub role: Role,
    pub agent: AgentId,
    pub resources: Resources,
    pub created_ms: u64,
}

/// What a framework does with an offer it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Uses these resources (from the offer) for a task.
    Launch(Resources),
    /// Reserves these unreserved resources of the offer for the offer's role, on that agent.
    Reserve(Resources),
    /// Returns these resources, reserved for the offer's role, to the unreserved pool.
    Unreserve(Resources),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocError {
    #[error("unknown offer {0}")]
    UnknownOffer(OfferId),
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("unknown framework {0:?}")]
    UnknownFramework(String),
    #[error("agent {0:?} is already registered")]
    AgentExists(String),
    #[error("operation on offer {offer}: {reason}")]
    BadOperation { offer: OfferId, reason: String },
    #[error("weight for role {role} must be a positive number up to {MAX_WEIGHT}, not {}", crate::resources::show(*weight))]
    BadWeight { role: String, weight: f64 },
}

#[derive(Debug, Clone)]
struct Filter {
    resources: Resources,
    until_ms: u64,
}

#[derive(Debug, Clone)]
struct AgentState {
    total: Resources,
    /// Offered or used.
    allocated: Resources,
}

impl AgentState {
    fn available(&self) -> Resources {
        self.total.minus(&self.allocated).expect("allocated is always within total")
    }
}

#[derive(Debug, Clone)]
struct FrameworkState {
    roles: Vec<Role>,
    suppressed: BTreeSet<Role>,
    filters: HashMap<AgentId, Vec<Filter>>,
    seq: u64,
    /// Per role, unreserved view, offered or used.
    alloc: BTreeMap<Role, Resources>,
}

/// A sort key: dominant share (scaled), then arrival order, then name.
type Key = (u64, u64, String);

#[derive(Debug, Clone, Default)]
struct RoleState {
    config: RoleConfig,
    /// Unreserved view of everything the role holds, offered or used.
    alloc: Resources,
    seq: u64,
    key: Option<Key>,
    /// Frameworks of this role with demand, sorted by their share within the role.
    order: BTreeSet<Key>,
    fw_keys: HashMap<FrameworkId, Key>,
}

/// One role's state, for `corral roles`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSummary {
    pub role: Role,
    pub weight: f64,
    pub quota: Option<Resources>,
    pub allocated: Resources,
    pub dominant_share: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Allocator {
    // Persistent maps: the master copies the allocator for every command it runs (and keeps
    // the copy only if the command succeeds), so copies share structure.
    agents: imbl::OrdMap<AgentId, AgentState>,
    frameworks: imbl::HashMap<FrameworkId, FrameworkState>,
    roles: imbl::OrdMap<Role, RoleState>,
    /// Roles with demand, sorted by weighted dominant share.
    role_order: imbl::OrdSet<Key>,
    offers: imbl::OrdMap<OfferId, Offer>,
    /// The cluster's total, unreserved view: the denominator of every share.
    total: Resources,
    next_offer: OfferId,
    next_seq: u64,
    /// Where the next allocation cycle starts among the agents, so no agent is always first.
    cursor: usize,
}

const SHARE_SCALE: f64 = 1e12;

impl Allocator {
    pub fn new() -> Allocator {
        Allocator::default()
    }

    // ---- agents -------------------------------------------------------------------------

    pub fn add_agent(&mut self, id: &str, total: Resources) -> Result<(), AllocError> {
        if self.agents.contains_key(id) {
            return Err(AllocError::AgentExists(id.to_string()));
        }
        self.total = self.total.plus(&total.unreserved_view());
        self.agents.insert(id.to_string(), AgentState { total, allocated: Resources::new() });
        self.resort_all();
        Ok(())
    }

    /// Removes an agent (gone or unreachable): its outstanding offers are rescinded and what
    /// its tasks held is recovered. Returns the rescinded offers.
    pub fn remove_agent(&mut self, id: &str) -> Result<Vec<Offer>, AllocError> {
        let agent = self.agents.remove(id).ok_or_else(|| AllocError::UnknownAgent(id.to_string()))?;
        let rescinded: Vec<OfferId> = self.offers.values().filter(|o| o.agent == id).map(|o| o.id).collect();
        let mut out = Vec::new();
        for oid in rescinded {
            let offer = self.offers.remove(&oid).expect("listed above");
            self.charge(&offer.framework, &offer.role, &offer.resources, false);
            out.push(offer);
        }
        // What its tasks held leaves the role and framework shares when the master recovers
        // each task (`recover_task`), as it marks them lost.
        drop(agent);
        self.recompute_total();
        Ok(out)
    }

    fn recompute_total(&mut self) {
        self.total = self.agents.values().fold(Resources::new(), |acc, a| acc.plus(&a.total.unreserved_view()));
        self.resort_all();
    }

    pub fn agent_available(&self, id: &str) -> Option<Resources> {
        self.agents.get(id).map(|a| a.available())
    }

    pub fn agent_total(&self, id: &str) -> Option<&Resources> {
        self.agents.get(id).map(|a| &a.total)
    }

    // ---- frameworks and roles -----------------------------------------------------------

    /// Registers a framework in `roles` (each with demand, until it suppresses it).
    pub fn add_framework(&mut self, id: &str, roles: &[Role]) {
        let seq = self.bump();
        let fw = FrameworkState {
            roles: roles.to_vec(),
            suppressed: BTreeSet::new(),
            filters: HashMap::new(),
            seq,
            alloc: roles.iter().map(|r| (r.clone(), Resources::new())).collect(),
        };
        self.frameworks.insert(id.to_string(), fw);
        for r in roles {
            self.ensure_role(r);
            self.resort_framework(id, r);
        }
    }

    /// Removes a framework: its offers are rescinded (returned) and its allocations released.
    pub fn remove_framework(&mut self, id: &str) -> Result<Vec<Offer>, AllocError> {
        let fw = self.frameworks.get(id).ok_or_else(|| AllocError::UnknownFramework(id.to_string()))?.clone();
        let rescinded: Vec<OfferId> = self.offers.values().filter(|o| o.framework == id).map(|o| o.id).collect();
        let mut out = Vec::new();
        for oid in rescinded {
            let offer = self.offers.remove(&oid).expect("listed above");
            self.release(&offer.agent, &offer.resources);
            self.charge(id, &offer.role, &offer.resources, false);
            out.push(offer);
        }
        for r in &fw.roles {
            if let Some(rs) = self.roles.get_mut(r) {
                if let Some(k) = rs.fw_keys.remove(id) {
                    rs.order.remove(&k);
                }
            }
            self.resort_role(r);
        }
        self.frameworks.remove(id);
        Ok(out)
    }

    /// Stops offers to the framework for `role` (it has nothing to run there).
    pub fn suppress(&mut self, framework: &str, role: &Role) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.suppressed.insert(role.clone());
        }
        self.resort_framework(framework, role);
    }

    /// Resumes offers to the framework for `role`, and clears its filters.
    pub fn revive(&mut self, framework: &str, role: &Role) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.suppressed.remove(role);
            fw.filters.clear();
        }
        self.resort_framework(framework, role);
    }

    pub fn set_role(&mut self, role: &Role, config: RoleConfig) -> Result<(), AllocError> {
        if !(config.weight.is_finite() && config.weight > 0.0 && config.weight <= MAX_WEIGHT) {
            return Err(AllocError::BadWeight { role: role.to_string(), weight: config.weight });
        }
        self.ensure_role(role);
        self.roles.get_mut(role).expect("ensured").config = config;
        self.resort_role(role);
        Ok(())
    }

    pub fn roles(&self) -> Vec<RoleSummary> {
        self.roles
            .iter()
            .map(|(r, s)| RoleSummary {
                role: r.clone(),
                weight: s.config.weight,
                quota: s.config.quota.clone(),
                allocated: s.alloc.clone(),
                dominant_share: self.share(&s.alloc),
            })
            .collect()
    }

    // ---- the allocation cycle -----------------------------------------------------------

    /// One allocation cycle: offers every agent's free resources, each role in order of its
    /// weighted dominant share, within a role to the framework with the lowest share that has
    /// not filtered them, capped by the role's quota.
    pub fn allocate(&mut self, now_ms: u64) -> Vec<Offer> {
        let mut made = Vec::new();
        if self.agents.is_empty() || self.role_order.is_empty() {
            return made;
        }
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        let n = ids.len();
        let start = self.cursor % n;
        self.cursor = self.cursor.wrapping_add(1);
        for i in 0..n {
            let agent_id = &ids[(start + i) % n];
            let agent = &self.agents[agent_id];
            if agent.allocated == agent.total {
                // Full: skip it without working out what is left.
                continue;
            }
            let mut available = agent.available();
            if available.is_empty() {
                continue;
            }
            // Decide against the order as it stands, then apply (and re-sort) after each choice.
            let role_keys: Vec<Key> = self.role_order.iter().cloned().collect();
            for (_, _, role_name) in role_keys {
                if available.is_empty() {
                    break;
                }
                let role = Role::parse(&role_name).expect("roles in the order are valid");
                let usable = available.usable_by(&role);
                if usable.is_empty() {
                    continue;
                }
                let usable = match self.quota_headroom(&role) {
                    Some(room) => usable.capped(&room),
                    None => usable,
                };
                if usable.scalar_names().is_empty() {
                    continue;
                }
                let Some(fw) = self.pick_framework(&role, agent_id, &usable, now_ms) else { continue };
                let offer = Offer {
                    id: self.next_offer,
                    framework: fw.clone(),
                    role: role.clone(),
                    agent: agent_id.clone(),
                    resources: usable.clone(),
                    created_ms: now_ms,
                };
                self.next_offer += 1;
                available = available.minus(&usable).expect("usable is part of available");
                let agent = self.agents.get_mut(agent_id).expect("listed");
                agent.allocated = agent.allocated.plus(&usable);
                self.charge(&fw, &role, &usable, true);
                self.offers.insert(offer.id, offer.clone());
                made.push(offer);
            }
        }
        made
    }

    fn pick_framework(&self, role: &Role, agent: &str, usable: &Resources, now_ms: u64) -> Option<FrameworkId> {
        let rs = self.roles.get(role)?;
        for (_, _, fw_id) in &rs.order {
            let fw = &self.frameworks[fw_id];
            let filtered = fw
                .filters
                .get(agent)
                .is_some_and(|fs| fs.iter().any(|f| f.until_ms > now_ms && f.resources.contains(usable)));
            if !filtered {
                return Some(fw_id.clone());
            }
        }
        None
    }

    /// What the role may still take, per scalar, under its quota; `None` without a quota.
    fn quota_headroom(&self, role: &Role) -> Option<BTreeMap<String, Milli>> {
        let rs = self.roles.get(role)?;
        let quota = rs.config.quota.as_ref()?;
        Some(
            quota
                .scalar_names()
                .into_iter()
                .map(|n| (n.to_string(), quota.scalar_total(n).saturating_sub(rs.alloc.scalar_total(n))))
                .collect(),
        )
    }

    // ---- offers -------------------------------------------------------------------------

    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// Declines an offer: its resources return, and are not offered to this framework on this
    /// agent again for `refuse_ms`.
    pub fn decline(&mut self, offer: OfferId, refuse_ms: u64, now_ms: u64) -> Result<(), AllocError> {
        let o = self.offers.remove(&offer).ok_or(AllocError::UnknownOffer(offer))?;
        self.give_back(&o, &o.resources, refuse_ms, now_ms);
        Ok(())
    }

    /// Accepts an offer with operations; what they do not use returns (with a `refuse_ms`
    /// filter). Returns the resources of each launch, in order.
    pub fn accept(
        &mut self,
        offer: OfferId,
        ops: &[Operation],
        refuse_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Resources>, AllocError> {
        let o = self.offers.get(&offer).ok_or(AllocError::UnknownOffer(offer))?.clone();
        let bad = |reason: String| AllocError::BadOperation { offer, reason };
        // Check every operation against what is left of the offer before changing anything.
        let mut left = o.resources.clone();
        let mut launched = Vec::new();
        let mut total_delta: Vec<(Resources, Resources)> = Vec::new();
        for op in ops {
            match op {
                Operation::Launch(r) => {
                    left = left
                        .minus(r)
                        .ok_or_else(|| bad(format!("launch of {r} is more than the offer has left ({left})")))?;
                    launched.push(r.clone());
                }
                Operation::Reserve(r) => {
                    if r.iter().any(|(_, role, _)| !role.is_any()) {
                        return Err(bad(format!("reserve of {r}: only unreserved resources can be reserved")));
                    }
                    if o.role.is_any() {
                        return Err(bad("a framework in role * cannot reserve".into()));
                    }
                    let reserved = r.with_role(&o.role);
                    left = left
                        .minus(r)
                        .ok_or_else(|| bad(format!("reserve of {r} is more than the offer has left ({left})")))?
                        .plus(&reserved);
                    total_delta.push((r.clone(), reserved));
                }
                Operation::Unreserve(r) => {
                    if r.iter().any(|(_, role, _)| role != &o.role) {
                        return Err(bad(format!(
                            "unreserve of {r}: only resources reserved for role {} can be unreserved",
                            o.role
                        )));
                    }
                    let unreserved = r.with_role(&Role::any());
                    left = left
                        .minus(r)
                        .ok_or_else(|| bad(format!("unreserve of {r} is more than the offer has left ({left})")))?
                        .plus(&unreserved);
                    total_delta.push((r.clone(), unreserved));
                }
            }
        }
        self.offers.remove(&offer);
        let agent = self.agents.get_mut(&o.agent).ok_or_else(|| AllocError::UnknownAgent(o.agent.clone()))?;
        for (from, to) in &total_delta {
            agent.total = agent.total.minus(from).expect("checked against the offer").plus(to);
            agent.allocated = agent.allocated.minus(from).expect("offered").plus(to);
        }
        let mut unused = o.clone();
        unused.resources = left.clone();
        self.give_back(&unused, &left, refuse_ms, now_ms);
        Ok(launched)
    }

    /// Returns resources a task held (it ended) to the agent and out of the role's share.
    pub fn recover_task(&mut self, framework: &str, role: &Role, agent: &str, resources: &Resources) {
        self.release(agent, resources);
        self.charge(framework, role, resources, false);
    }

    /// Re-records resources of a task that runs (after a master restart), as if launched.
    pub fn restore_task(
        &mut self,
        framework: &str,
        role: &Role,
        agent: &str,
        resources: &Resources,
    ) -> Result<(), AllocError> {
        let a = self.agents.get_mut(agent).ok_or_else(|| AllocError::UnknownAgent(agent.to_string()))?;
        let grown = a.allocated.plus(resources);
        if !a.total.contains(&grown) {
            return Err(AllocError::BadOperation {
                offer: 0,
                reason: format!("task resources {resources} exceed agent {agent}'s free resources"),
            });
        }
        a.allocated = grown;
        self.charge(framework, role, resources, true);
        Ok(())
    }

    /// Rescinds offers older than `timeout_ms`; returns them.
    pub fn expire_offers(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Offer> {
        let old: Vec<OfferId> =
            self.offers.values().filter(|o| now_ms.saturating_sub(o.created_ms) >= timeout_ms).map(|o| o.id).collect();
        old.into_iter()
            .map(|id| {
                let o = self.offers.remove(&id).expect("listed");
                self.give_back(&o, &o.resources, 0, now_ms);
                o
            })
            .collect()
    }

    // ---- bookkeeping --------------------------------------------------------------------

    fn give_back(&mut self, o: &Offer, resources: &Resources, refuse_ms: u64, now_ms: u64) {
        self.release(&o.agent, resources);
        self.charge(&o.framework, &o.role, resources, false);
        if refuse_ms > 0 && !resources.is_empty() {
            if let Some(fw) = self.frameworks.get_mut(&o.framework) {
                fw.filters
                    .entry(o.agent.clone())
                    .or_default()
                    .push(Filter { resources: resources.clone(), until_ms: now_ms + refuse_ms });
            }
        }
    }

    fn release(&mut self, agent: &str, resources: &Resources) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.allocated = a.allocated.minus(resources).unwrap_or_default();
        }
    }

    /// Adds (or removes) resources to a framework's and its role's share, and re-sorts both.
    fn charge(&mut self, framework: &str, role: &Role, resources: &Resources, add: bool) {
        let view = resources.unreserved_view();
        if let Some(fw) = self.frameworks.get_mut(framework) {
            let cur = fw.alloc.entry(role.clone()).or_default();
            *cur = if add { cur.plus(&view) } else { cur.minus(&view).unwrap_or_default() };
        }
        if let Some(rs) = self.roles.get_mut(role) {
            rs.alloc = if add { rs.alloc.plus(&view) } else { rs.alloc.minus(&view).unwrap_or_default() };
        }
        self.resort_framework(framework, role);
    }

    fn ensure_role(&mut self, role: &Role) {
        if !self.roles.contains_key(role) {
            let seq = self.bump();
            self.roles.insert(role.clone(), RoleState { seq, ..RoleState::default() });
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The dominant share of `alloc`: its largest fraction of any scalar in the cluster.
    fn share(&self, alloc: &Resources) -> f64 {
        alloc
            .scalar_names()
            .into_iter()
            .map(|n| {
                let total = self.total.scalar_total(n);
                if total == 0 {
                    0.0
                } else {
                    alloc.scalar_total(n) as f64 / total as f64
                }
            })
            .fold(0.0, f64::max)
    }

    fn resort_framework(&mut self, framework: &str, role: &Role) {
        let Some(fw) = self.frameworks.get(framework) else { return };
        let has_demand = fw.roles.contains(role) && !fw.suppressed.contains(role);
        let key = (scaled(self.share(fw.alloc.get(role).unwrap_or(&Resources::new()))), fw.seq, framework.to_string());
        if let Some(rs) = self.roles.get_mut(role) {
            if let Some(old) = rs.fw_keys.remove(framework) {
                rs.order.remove(&old);
            }
            if has_demand {
                rs.order.insert(key.clone());
                rs.fw_keys.insert(framework.to_string(), key);
            }
        }
        self.resort_role(role);
    }

    fn resort_role(&mut self, role: &Role) {
        let share = match self.roles.get(role) {
            Some(rs) => self.share(&rs.alloc) / rs.config.weight,
            None => return,
        };
        let rs = self.roles.get_mut(role).expect("checked");
        if let Some(old) = rs.key.take() {
            self.role_order.remove(&old);
        }
        if !rs.order.is_empty() {
            let key = (scaled(share), rs.seq, role.to_string());
            self.role_order.insert(key.clone());
            rs.key = Some(key);
        }
    }

    /// Totals changed: every share did.
    fn resort_all(&mut self) {
        let pairs: Vec<(FrameworkId, Role)> =
            self.frameworks.iter().flat_map(|(id, fw)| fw.roles.iter().map(move |r| (id.clone(), r.clone()))).collect();
        for (id, r) in pairs {
            self.resort_framework(&id, &r);
        }
    }
}

fn scaled(share: f64) -> u64 {
    (share * SHARE_SCALE) as u64
}
