//! The reconciler: for one app and the snapshot of its live tasks, which tasks to kill and how
//! many to launch, respecting the upgrade strategy during a rolling upgrade. Placement: whether
//! an offer fits one instance, with the host ports it gets, or the reason it does not. And the
//! steps of a deployment. All pure: snapshots and the clock in, decisions out.

use corral_alloc::resources::{Milli, Value};
use corral_alloc::{Resources, Role};

use crate::app::{App, AppId, KillSelection};
use crate::constraints::AgentView;

/// Where a live (non-terminal) task of an app is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for an offer.
    Queued,
    /// Sent to an agent, not running yet.
    Staging,
    Running,
    /// Asked to stop.
    Killing,
    /// Its agent stopped answering, less than the app's `inactiveAfterSeconds` ago: it still
    /// counts as an instance (not a healthy one).
    Unreachable,
    /// Unreachable for longer: replaced, as if gone.
    Inactive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    /// The app's `config_version` the task was launched with.
    pub config_version: String,
    pub phase: Phase,
    /// The health checks' verdict; `None` until the first result (or without health checks).
    pub healthy: Option<bool>,
    /// Order of launch: larger is younger.
    pub seq: u64,
    /// Its readiness checks passed (meaningless without readiness checks).
    pub ready: bool,
}

impl TaskView {
    /// Counts toward the app's healthy capacity.
    pub fn is_healthy(&self, app: &App) -> bool {
        self.phase == Phase::Running
            && (app.health_checks.is_empty() || self.healthy == Some(true))
            && (app.readiness_checks.is_empty() || self.ready)
    }

    fn is_live(&self) -> bool {
        !matches!(self.phase, Phase::Killing | Phase::Inactive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub task: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppPlan {
    pub kill: Vec<Kill>,
    /// Instances to launch now (queued tasks waiting for offers are already counted).
    pub launch: u32,
    /// The app is where its definition wants it: the instance count, every task of the
    /// current config, all healthy, and nothing left being killed.
    pub converged: bool,
}

/// Decides one app. `held` stops all launches and kills (a deployment step that has not begun).
pub fn reconcile(app: &App, tasks: &[TaskView], held: bool) -> AppPlan {
    let n = app.instances as usize;
    let (mut new, mut old): (Vec<&TaskView>, Vec<&TaskView>) =
        tasks.iter().filter(|t| t.is_live()).partition(|t| t.config_version == app.config_version);
    let killing = tasks.iter().any(|t| t.phase == Phase::Killing);
    let mut plan = AppPlan::default();
    if held {
        return plan;
    }
    // Unhealthy-task replacement is the health checker's decision (it kills); here, too many
    // tasks are trimmed and too few are filled up.
    if old.is_empty() {
        if new.len() > n {
            order_for_kill(&mut new, app);
            for t in &new[..new.len() - n] {
                plan.kill.push(Kill { task: t.id.clone(), reason: "scaling down" });
            }
        } else {
            plan.launch = (n - new.len()) as u32;
        }
        plan.converged = new.len() == n && new.iter().all(|t| t.is_healthy(app)) && !killing;
        return plan;
    }

    // A rolling upgrade, as Marathon runs it: old tasks are killed as long as the healthy
    // count stays at or above the minimum, new ones started up to the over-capacity.
    let (min_healthy, max_total) = capacity(app);
    let mut healthy = new.iter().chain(old.iter()).filter(|t| t.is_healthy(app)).count();
    // Unhealthy old tasks go first (killing them costs no capacity), then by kill selection.
    order_for_kill(&mut old, app);
    old.sort_by_key(|t| t.is_healthy(app));
    let mut left = new.len() + old.len();
    for t in &old {
        if t.is_healthy(app) {
            if healthy <= min_healthy {
                break;
            }
            healthy -= 1;
        }
        plan.kill.push(Kill { task: t.id.clone(), reason: "replaced by a new version" });
        left -= 1;
    }
    let launch = n.saturating_sub(new.len()).min(max_total.saturating_sub(left));
    plan.launch = launch as u32;
    plan
}

/// The healthy tasks a rolling upgrade keeps and the most tasks it runs at once:
/// `ceil(n * minimumHealthCapacity)` and `floor(n * (1 + maximumOverCapacity))`, the latter
/// one more when the two are equal (else nothing could move).
pub fn capacity(app: &App) -> (usize, usize) {
    let n = app.instances as f64;
    let min_healthy = (n * app.min_health_capacity).ceil() as usize;
    let mut max_total = (n * (1.0 + app.max_over_capacity)).floor() as usize;
    if max_total == min_healthy {
        max_total += 1;
    }
    (min_healthy, max_total)
}

/// Orders tasks so the first are the ones to kill: not yet running, then by kill selection.
fn order_for_kill(tasks: &mut [&TaskView], app: &App) {
    tasks.sort_by_key(|t| {
        let not_running = !matches!(t.phase, Phase::Running);
        let age_key = match app.kill_selection {
            KillSelection::YoungestFirst => u64::MAX - t.seq,
            KillSelection::OldestFirst => t.seq,
        };
        (!not_running, age_key)
    });
}

/// Launch delay after failures: `backoff * factor^(n-1)`, capped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backoff {
    pub delay_ms: u64,
    /// No launch before this time.
    pub until_ms: u64,
}

impl Backoff {
    /// A task of the app failed at `now_ms`.
    pub fn failed(&mut self, app: &App, now_ms: u64) {
        self.delay_ms = if self.delay_ms == 0 {
            app.backoff_ms
        } else {
            ((self.delay_ms as f64) * app.backoff_factor).round() as u64
        }
        .min(app.max_launch_delay_ms);
        self.until_ms = now_ms + self.delay_ms;
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    pub fn blocks(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }
}

/// Why an offer could not take an instance; the names are Marathon's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    UnfulfilledRole,
    UnfulfilledConstraint(String),
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientPorts,
}

impl Reason {
    pub fn name(&self) -> &'static str {
        match self {
            Reason::UnfulfilledRole => "UnfulfilledRole",
            Reason::UnfulfilledConstraint(_) => "UnfulfilledConstraint",
            Reason::InsufficientCpus => "InsufficientCpus",
            Reason::InsufficientMemory => "InsufficientMemory",
            Reason::InsufficientDisk => "InsufficientDisk",
            Reason::InsufficientPorts => "InsufficientPorts",
        }
    }

    /// For people: the name and what exactly failed.
    pub fn describe(&self, app: &App) -> String {
        match self {
            Reason::UnfulfilledRole => format!(
                "UnfulfilledRole: the app takes resources of roles {:?} only",
                app.accepted_roles.clone().unwrap_or_else(|| vec!["*".into(), app.role.clone()])
            ),
            Reason::UnfulfilledConstraint(why) => format!("UnfulfilledConstraint: {why}"),
            Reason::InsufficientCpus => format!("InsufficientCpus: needs {} cpus", app.cpus),
            Reason::InsufficientMemory => format!("InsufficientMemory: needs {} MiB", app.mem),
            Reason::InsufficientDisk => format!("InsufficientDisk: needs {} MiB", app.disk),
            Reason::InsufficientPorts => {
                let fixed: Vec<String> =
                    app.ports.iter().filter(|p| p.host_port != 0).map(|p| p.host_port.to_string()).collect();
                if fixed.is_empty() {
                    format!("InsufficientPorts: needs {} free ports", app.ports.len())
                } else {
                    format!("InsufficientPorts: needs ports {}", fixed.join(","))
                }
            }
        }
    }
}

/// One instance's share of an offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub resources: Resources,
    /// Host ports, one per app port, in order.
    pub ports: Vec<u64>,
}

/// Whether `offered` (what is left of an offer to the app's role) fits one instance on
/// `agent`, given where the app's tasks run (`placed`) and the values each constraint field
/// takes across the cluster (`known_values`, for GROUP_BY).
pub fn fit(
    app: &App,
    offered: &Resources,
    agent: &AgentView,
    placed: &[AgentView],
    known_values: &dyn Fn(&str) -> Vec<String>,
) -> Result<Fit, Vec<Reason>> {
    let mut reasons = Vec::new();
    let role = Role::parse(&app.role).unwrap_or_else(|_| Role::any());
    let usable = match &app.accepted_roles {
        Some(roles) => {
            let mut r = Resources::new();
            if roles.iter().any(|x| x == "*") {
                r = r.plus(&offered.usable_by(&Role::any()));
            }
            if roles.contains(&app.role) && !role.is_any() {
                r = r.plus(&offered.reserved_for(&role));
            }
            r
        }
        None => offered.usable_by(&role),
    };
    if app.accepted_roles.is_some() && usable.is_empty() && !offered.is_empty() {
        reasons.push(Reason::UnfulfilledRole);
    }
    for c in &app.constraints {
        if let Err(why) = c.check(agent, placed, &known_values(&c.field)) {
            reasons.push(Reason::UnfulfilledConstraint(why));
        }
    }
    let mut taken = Resources::new();
    for (name, amount, reason) in [
        ("cpus", (app.cpus * 1000.0).round() as Milli, Reason::InsufficientCpus),
        ("mem", (app.mem.ceil() * 1000.0) as Milli, Reason::InsufficientMemory),
        ("disk", (app.disk.ceil() * 1000.0) as Milli, Reason::InsufficientDisk),
    ] {
        match take_scalar(&usable, name, amount, &role) {
            Some(r) => taken = taken.plus(&r),
            None => reasons.push(reason),
        }
    }
    let ports = match take_ports(&usable, app) {
        Some((r, ports)) => {
            taken = taken.plus(&r);
            ports
        }
        None => {
            reasons.push(Reason::InsufficientPorts);
            Vec::new()
        }
    };
    if reasons.is_empty() {
        Ok(Fit { resources: taken, ports })
    } else {
        Err(reasons)
    }
}

/// `milli` of scalar `name`, from the role's reservation first, then unreserved.
fn take_scalar(from: &Resources, name: &str, milli: Milli, role: &Role) -> Option<Resources> {
    if milli == 0 {
        return Some(Resources::new());
    }
    let mut left = milli;
    let mut out = Resources::new();
    let mut sources: Vec<(&Role, Milli)> = from
        .iter()
        .filter(|(n, _, _)| *n == name)
        .filter_map(|(_, r, v)| match v {
            Value::Scalar(m) => Some((r, *m)),
            _ => None,
        })
        .collect();
    sources.sort_by_key(|(r, _)| *r != role);
    for (r, have) in sources {
        let take = have.min(left);
        if take > 0 {
            out = out.plus(&Resources::scalar(name, r, take));
            left -= take;
        }
    }
    (left == 0).then_some(out)
}

/// Host ports for the app: the fixed ones it names, and the lowest free ones for the rest.
fn take_ports(from: &Resources, app: &App) -> Option<(Resources, Vec<u64>)> {
    if app.ports.is_empty() {
        return Some((Resources::new(), Vec::new()));
    }
    let mut free: Vec<(Role, u64, u64)> = from
        .iter()
        .filter(|(n, _, _)| *n == "ports")
        .flat_map(|(_, r, v)| match v {
            Value::Ranges(rs) => rs.iter().map(|(a, b)| (r.clone(), *a, *b)).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    let mut chosen: Vec<(Role, u64)> = Vec::new();
    let mut ports = Vec::new();
    let is_free = |free: &[(Role, u64, u64)], chosen: &[(Role, u64)], p: u64| {
        free.iter()
            .find(|(_, a, b)| *a <= p && p <= *b)
            .map(|(r, _, _)| r.clone())
            .filter(|_| !chosen.iter().any(|(_, c)| *c == p))
    };
    for port in &app.ports {
        let p = if port.host_port != 0 {
            port.host_port
        } else {
            let mut pick = None;
            'outer: for (_, a, b) in &free {
                for p in *a..=*b {
                    if !chosen.iter().any(|(_, c)| *c == p) && !app.ports.iter().any(|x| x.host_port == p) {
                        pick = Some(p);
                        break 'outer;
                    }
                }
            }
            pick?
        };
        let role = is_free(&free, &chosen, p)?;
        chosen.push((role, p));
        ports.push(p);
    }
    free.clear();
    let mut out = Resources::new();
    for (role, p) in chosen {
        let spec = if role.is_any() { format!("ports:[{p}-{p}]") } else { format!("ports({role}):[{p}-{p}]") };
        out = out.plus(&Resources::parse(&spec).expect("a one-port range parses"));
    }
    Some((out, ports))
}

/// Marathon's deployment action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

/// What a deployment changes for one app.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    pub id: AppId,
    pub from: Option<&'a App>,
    pub to: Option<&'a App>,
}

/// The steps of a deployment: apps ordered by their dependencies (what an app depends on is
/// started first; stopped apps go in reverse), each step a list of actions.
pub fn steps(changes: &[Change]) -> Vec<Vec<(Action, AppId)>> {
    let ids: Vec<&str> = changes.iter().map(|c| c.id.as_str()).collect();
    // Depth of each changed app among the changed apps' dependencies.
    let deps_of = |id: &str| -> Vec<String> {
        changes
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.to.or(c.from))
            .map(|a| a.dependencies.iter().filter(|d| ids.contains(&d.as_str())).cloned().collect())
            .unwrap_or_default()
    };
    let mut depth: std::collections::BTreeMap<String, usize> = Default::default();
    fn depth_of(
        id: &str,
        deps_of: &dyn Fn(&str) -> Vec<String>,
        depth: &mut std::collections::BTreeMap<String, usize>,
        visiting: &mut Vec<String>,
    ) -> usize {
        if let Some(d) = depth.get(id) {
            return *d;
        }
        if visiting.iter().any(|v| v == id) {
            return 0; // a cycle: refused at validation; do not loop here
        }
        visiting.push(id.to_string());
        let d = deps_of(id).iter().map(|x| depth_of(x, deps_of, depth, visiting) + 1).max().unwrap_or(0);
        visiting.pop();
        depth.insert(id.to_string(), d);
        d
    }
    let mut levels: std::collections::BTreeMap<(usize, bool), Vec<(Action, AppId)>> = Default::default();
    let max = changes.iter().map(|c| depth_of(&c.id, &deps_of, &mut depth, &mut Vec::new())).max().unwrap_or(0);
    for c in changes {
        let d = depth[&c.id];
        let (action, level) = match (c.from, c.to) {
            (None, Some(_)) => (Action::StartApplication, d),
            (Some(_), None) => (Action::StopApplication, max - d),
            (Some(a), Some(b)) if a.config_version != b.config_version => (Action::RestartApplication, d),
            _ => (Action::ScaleApplication, d),
        };
        levels.entry((level, action == Action::StopApplication)).or_default().push((action, c.id.clone()));
    }
    let mut out: Vec<Vec<(Action, AppId)>> = levels.into_values().collect();
    // Marathon starts a new app at zero instances, then scales it: two steps.
    let mut expanded = Vec::new();
    for step in out.drain(..) {
        let scales: Vec<(Action, AppId)> = step
            .iter()
            .filter(|(a, _)| *a == Action::StartApplication)
            .map(|(_, id)| (Action::ScaleApplication, id.clone()))
            .collect();
        expanded.push(step);
        if !scales.is_empty() {
            expanded.push(scales);
        }
    }
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AppDefinition;

    fn app(json: &str) -> App {
        let mut d = AppDefinition::decode(json.as_bytes(), false).unwrap().normalized();
        d.version = Some("v1".into());
        App::from_definition(&d).unwrap()
    }

    fn task(id: &str, version: &str, phase: Phase, seq: u64) -> TaskView {
        TaskView { id: id.into(), config_version: version.into(), phase, healthy: None, seq, ready: false }
    }

    #[test]
    fn fills_up_and_trims() {
        let a = app(r#"{"id":"a","cmd":"x","instances":3}"#);
        let p = reconcile(&a, &[task("t1", "v1", Phase::Running, 1)], false);
        assert_eq!((p.launch, p.kill.len(), p.converged), (2, 0, false));
        let ts = [
            task("t1", "v1", Phase::Running, 1),
            task("t2", "v1", Phase::Running, 2),
            task("t3", "v1", Phase::Queued, 3),
            task("t4", "v1", Phase::Running, 4),
            task("t5", "v1", Phase::Running, 5),
        ];
        let p = reconcile(&a, &ts, false);
        let killed: Vec<&str> = p.kill.iter().map(|k| k.task.as_str()).collect();
        assert_eq!(killed, ["t3", "t5"], "not-yet-running first, then youngest");
        assert!(reconcile(&a, &ts[..2], true).kill.is_empty() && reconcile(&a, &ts[..2], true).launch == 0);
        assert!(reconcile(&a, &[ts[0].clone(), ts[1].clone(), ts[3].clone()], false).converged);
    }

    #[test]
    fn readiness_gates_the_healthy_count() {
        let a = app(r#"{"id":"a","cmd":"x","portDefinitions":[{"port":0,"name":"http-api"}],"readinessChecks":[{}]}"#);
        let mut t = task("t1", "v1", Phase::Running, 1);
        assert!(!t.is_healthy(&a));
        t.ready = true;
        assert!(t.is_healthy(&a));
    }

    #[test]
    fn unreachable_tasks_count_until_inactive() {
        let a = app(r#"{"id":"a","cmd":"x","instances":2}"#);
        let ts = [task("t1", "v1", Phase::Running, 1), task("t2", "v1", Phase::Unreachable, 2)];
        assert_eq!(reconcile(&a, &ts, false).launch, 0, "still an instance");
        assert!(!reconcile(&a, &ts, false).converged, "but not a healthy one");
        let ts = [task("t1", "v1", Phase::Running, 1), task("t2", "v1", Phase::Inactive, 2)];
        assert_eq!(reconcile(&a, &ts, false).launch, 1, "replaced");
    }

    #[test]
    fn rolling_upgrade_keeps_full_capacity_with_min_health_one() {
        let mut a = app(
            r#"{"id":"a","cmd":"x","instances":2,"upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0.5}}"#,
        );
        a.config_version = "v2".into();
        let mut ts = vec![task("o1", "v1", Phase::Running, 1), task("o2", "v1", Phase::Running, 2)];
        // Room for one over capacity: one new task, no kill.
        let p = reconcile(&a, &ts, false);
        assert_eq!((p.launch, p.kill.len()), (1, 0));
        ts.push(task("n1", "v2", Phase::Staging, 3));
        assert_eq!(reconcile(&a, &ts, false), AppPlan::default(), "waits while the new task is not healthy");
        ts[2].phase = Phase::Running;
        let p = reconcile(&a, &ts, false);
        assert_eq!(p.kill.len(), 1, "{p:?}");
        assert_eq!(p.launch, 1);
    }

    #[test]
    fn rolling_upgrade_with_min_health_zero_kills_first() {
        let mut a = app(
            r#"{"id":"a","cmd":"x","instances":2,"upgradeStrategy":{"minimumHealthCapacity":0,"maximumOverCapacity":0}}"#,
        );
        a.config_version = "v2".into();
        let ts = vec![task("o1", "v1", Phase::Running, 1), task("o2", "v1", Phase::Running, 2)];
        let p = reconcile(&a, &ts, false);
        assert_eq!((p.launch, p.kill.len()), (2, 2));
    }

    #[test]
    fn no_overcapacity_and_full_health_still_moves() {
        let mut a = app(
            r#"{"id":"a","cmd":"x","instances":1,"upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0}}"#,
        );
        a.config_version = "v2".into();
        let p = reconcile(&a, &[task("o1", "v1", Phase::Running, 1)], false);
        assert_eq!((p.launch, p.kill.len()), (1, 0));
    }

    proptest::proptest! {
        /// Whatever the tasks, a plan never leaves fewer healthy tasks than the minimum it had
        /// room to keep, and never launches past the over-capacity.
        #[test]
        fn upgrade_respects_the_strategy(
            n in 0u32..8, old in 0usize..8, new in 0usize..8, healthy_mask in 0u32..65536,
            min in 0u32..=4, over in 0u32..=4,
        ) {
            let mut a = app(r#"{"id":"a","cmd":"x"}"#);
            a.instances = n;
            a.min_health_capacity = min as f64 / 4.0;
            a.max_over_capacity = over as f64 / 4.0;
            a.config_version = "v2".into();
            let mut ts = Vec::new();
            for i in 0..old + new {
                let phase = if healthy_mask & (1 << i) != 0 { Phase::Running } else { Phase::Staging };
                ts.push(task(&format!("t{i}"), if i < old { "v1" } else { "v2" }, phase, i as u64));
            }
            let p = reconcile(&a, &ts, false);
            let healthy_before = ts.iter().filter(|t| t.is_healthy(&a)).count();
            let killed_healthy = p.kill.iter().filter(|k| ts.iter().any(|t| t.id == k.task && t.is_healthy(&a))).count();
            let (min_healthy, max_total) = capacity(&a);
            if old > 0 {
                proptest::prop_assert!(healthy_before - killed_healthy >= min_healthy.min(healthy_before));
                let after = ts.len() - p.kill.len() + p.launch as usize;
                proptest::prop_assert!(after <= max_total.max(ts.len() - p.kill.len()));
            } else {
                let after = ts.len() - p.kill.len() + p.launch as usize;
                proptest::prop_assert_eq!(after, n as usize);
            }
        }
    }

    fn agents(s: &str) -> corral_alloc::attributes::Attributes {
        corral_alloc::attributes::parse(s).unwrap()
    }

    #[test]
    fn fit_takes_resources_and_ports_or_says_why() {
        let a =
            app(r#"{"id":"a","cmd":"x","cpus":0.5,"mem":64,"portDefinitions":[{"port":0},{"port":0,"name":"admin"}]}"#);
        let attrs = agents("rack:r1");
        let view = AgentView { hostname: "h1", attributes: &attrs };
        let offer = Resources::parse("cpus:2;mem:1024;ports:[31000-31001,31005-31010]").unwrap();
        let f = fit(&a, &offer, &view, &[], &|_| Vec::new()).unwrap();
        assert_eq!(f.ports, [31000, 31001]);
        assert!(offer.contains(&f.resources));
        let small = Resources::parse("cpus:0.1;mem:1024;ports:[31000-31000]").unwrap();
        let why = fit(&a, &small, &view, &[], &|_| Vec::new()).unwrap_err();
        assert_eq!(why, [Reason::InsufficientCpus, Reason::InsufficientPorts]);

        let fixed = app(r#"{"id":"a","cmd":"x","requirePorts":true,"portDefinitions":[{"port":8080}]}"#);
        assert_eq!(fit(&fixed, &offer, &view, &[], &|_| Vec::new()).unwrap_err(), [Reason::InsufficientPorts]);
        let with = Resources::parse("cpus:2;mem:1024;ports:[8080-8080]").unwrap();
        assert_eq!(fit(&fixed, &with, &view, &[], &|_| Vec::new()).unwrap().ports, [8080]);

        let unique = app(r#"{"id":"a","cmd":"x","constraints":[["hostname","UNIQUE"]]}"#);
        let why = fit(&unique, &offer, &view, &[view], &|_| Vec::new()).unwrap_err();
        assert!(matches!(&why[0], Reason::UnfulfilledConstraint(m) if m.contains("UNIQUE")), "{why:?}");

        let reserved = app(r#"{"id":"a","cmd":"x","role":"web","acceptedResourceRoles":["web"],"portDefinitions":[]}"#);
        let unreserved_only = Resources::parse("cpus:4;mem:4096").unwrap();
        let why = fit(&reserved, &unreserved_only, &view, &[], &|_| Vec::new()).unwrap_err();
        assert_eq!(why[0], Reason::UnfulfilledRole);
        let r = Resources::parse("cpus(web):4;mem(web):4096").unwrap();
        assert!(fit(&reserved, &r, &view, &[], &|_| Vec::new()).is_ok());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let a = app(r#"{"id":"a","cmd":"x","backoffSeconds":1,"backoffFactor":2,"maxLaunchDelaySeconds":3}"#);
        let mut b = Backoff::default();
        b.failed(&a, 0);
        assert_eq!(b.delay_ms, 1000);
        b.failed(&a, 0);
        assert_eq!(b.delay_ms, 2000);
        b.failed(&a, 10);
        assert_eq!((b.delay_ms, b.until_ms), (3000, 3010));
        assert!(b.blocks(3009) && !b.blocks(3010));
    }

    #[test]
    fn deployment_steps_follow_dependencies() {
        let db = app(r#"{"id":"/db","cmd":"x"}"#);
        let web = app(r#"{"id":"/web","cmd":"x","dependencies":["/db"]}"#);
        let s = steps(&[
            Change { id: "/web".into(), from: None, to: Some(&web) },
            Change { id: "/db".into(), from: None, to: Some(&db) },
        ]);
        let names: Vec<Vec<(Action, &str)>> =
            s.iter().map(|st| st.iter().map(|(a, id)| (*a, id.as_str())).collect()).collect();
        assert_eq!(
            names,
            [
                vec![(Action::StartApplication, "/db")],
                vec![(Action::ScaleApplication, "/db")],
                vec![(Action::StartApplication, "/web")],
                vec![(Action::ScaleApplication, "/web")],
            ]
        );
        let mut web2 = web.clone();
        web2.config_version = "v2".into();
        let s = steps(&[Change { id: "/web".into(), from: Some(&web), to: Some(&web2) }]);
        assert_eq!(s, [vec![(Action::RestartApplication, "/web".to_string())]]);
    }
}
