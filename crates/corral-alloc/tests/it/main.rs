//! The allocator through its public interface: the DRF paper's example, weights, reservations,
//! quotas, filters, rescinds, and invariants over random event sequences.

use std::collections::BTreeMap;

use corral_alloc::{Allocator, Operation, Resources, Role, RoleConfig};
use proptest::prelude::*;

fn r(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

fn role(s: &str) -> Role {
    Role::parse(s).unwrap()
}

/// A framework that launches one task per offer (the built-in task framework's policy), so the
/// allocator's order decides who gets what.
struct Queue {
    task: Resources,
    left: usize,
    placed: usize,
}

/// Runs cycles until nothing more can be placed; returns tasks placed per framework.
fn fill(alloc: &mut Allocator, queues: &mut BTreeMap<String, Queue>) -> BTreeMap<String, usize> {
    let mut now = 0;
    for _ in 0..10_000 {
        now += 1;
        let offers = alloc.allocate(now);
        if offers.is_empty() {
            break;
        }
        for o in offers {
            let q = queues.get_mut(&o.framework).unwrap();
            if q.left > 0 && o.resources.contains(&q.task) {
                alloc.accept(o.id, &[Operation::Launch(q.task.clone())], 0, now).unwrap();
                q.left -= 1;
                q.placed += 1;
            } else {
                // Cannot use it: do not offer these again.
                alloc.decline(o.id, u64::MAX / 4, now).unwrap();
                if q.left == 0 {
                    alloc.suppress(&o.framework, &o.role);
                }
            }
        }
    }
    queues.iter().map(|(k, q)| (k.clone(), q.placed)).collect()
}

#[test]
fn the_drf_papers_example() {
    // 9 CPUs and 18 GB; A's tasks need <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>; both queued more than
    // fits before the agent joined. DRF gives A three tasks and B two, whichever asked first.
    for a_first in [true, false] {
        let mut alloc = Allocator::new();
        let mut queues = BTreeMap::new();
        let order = if a_first { ["A", "B"] } else { ["B", "A"] };
        for name in order {
            alloc.add_framework(name, &[role(&name.to_lowercase())]);
            let task = if name == "A" { r("cpus:1;mem:4096") } else { r("cpus:3;mem:1024") };
            queues.insert(name.to_string(), Queue { task, left: 100, placed: 0 });
        }
        alloc.add_agent("agent-1", r("cpus:9;mem:18432")).unwrap();
        let placed = fill(&mut alloc, &mut queues);
        assert_eq!((placed["A"], placed["B"]), (3, 2), "a_first={a_first}");
        let shares: BTreeMap<String, f64> =
            alloc.roles().into_iter().map(|s| (s.role.to_string(), s.dominant_share)).collect();
        assert!((shares["a"] - 2.0 / 3.0).abs() < 0.01 && (shares["b"] - 2.0 / 3.0).abs() < 0.01, "{shares:?}");
    }
}

#[test]
fn weights_scale_dominant_shares() {
    let mut alloc = Allocator::new();
    alloc.set_role(&role("heavy"), RoleConfig { weight: 2.0, quota: None }).unwrap();
    let mut queues = BTreeMap::new();
    for (name, rl) in [("H", "heavy"), ("L", "light")] {
        alloc.add_framework(name, &[role(rl)]);
        queues.insert(name.to_string(), Queue { task: r("cpus:1;mem:1"), left: 1000, placed: 0 });
    }
    alloc.add_agent("a", r("cpus:30;mem:1000")).unwrap();
    let placed = fill(&mut alloc, &mut queues);
    assert_eq!((placed["H"], placed["L"]), (20, 10));
    assert!(alloc.set_role(&role("x"), RoleConfig { weight: 0.0, quota: None }).is_err());
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let mut alloc = Allocator::new();
    alloc.add_framework("other", &[role("other")]);
    alloc.add_agent("a", r("cpus(ads):2;mem(ads):100")).unwrap();
    assert!(alloc.allocate(1).is_empty(), "nothing unreserved to offer to role other");
    alloc.add_framework("ads-fw", &[role("ads")]);
    let offers = alloc.allocate(2);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        (offers[0].framework.as_str(), offers[0].resources.to_string().as_str()),
        ("ads-fw", "cpus(ads):2;mem(ads):100")
    );
}

#[test]
fn quota_caps_what_a_role_holds() {
    let mut alloc = Allocator::new();
    alloc.set_role(&role("capped"), RoleConfig { weight: 1.0, quota: Some(r("cpus:3")) }).unwrap();
    alloc.add_framework("f", &[role("capped")]);
    alloc.add_agent("a", r("cpus:4;mem:100")).unwrap();
    alloc.add_agent("b", r("cpus:4;mem:100")).unwrap();
    let offers = alloc.allocate(1);
    let cpus: u64 = offers.iter().map(|o| o.resources.scalar_total("cpus")).sum();
    assert_eq!(cpus, 3000, "{offers:?}");
    let summary = alloc.roles().into_iter().find(|s| s.role == role("capped")).unwrap();
    assert_eq!(summary.allocated.scalar_total("cpus"), 3000);
}

#[test]
fn filters_rescinds_and_expiry() {
    let mut alloc = Allocator::new();
    alloc.add_framework("f1", &[role("r")]);
    alloc.add_framework("f2", &[role("r")]);
    alloc.add_agent("a", r("cpus:1;mem:10")).unwrap();
    let o = alloc.allocate(0).remove(0);
    assert_eq!(o.framework, "f1", "registered first, equal shares");
    assert!(alloc.allocate(1).is_empty(), "never offered twice");
    alloc.decline(o.id, 5_000, 1).unwrap();
    let o2 = alloc.allocate(2).remove(0);
    assert_eq!(o2.framework, "f2", "f1 refused these for 5 s");
    alloc.decline(o2.id, 5_000, 2).unwrap();
    assert!(alloc.allocate(3).is_empty(), "both filtered");
    assert_eq!(alloc.allocate(5_002).len(), 1, "f1's filter expired");
    // An outstanding offer is rescinded when its agent goes away.
    let rescinded = alloc.remove_agent("a").unwrap();
    assert_eq!(rescinded.len(), 1);
    assert_eq!(alloc.offers().count(), 0);
    alloc.add_agent("b", r("cpus:1;mem:10")).unwrap();
    let o3 = alloc.allocate(10_000).remove(0);
    assert_eq!(alloc.expire_offers(10_000 + 29_999, 30_000).len(), 0);
    assert_eq!(alloc.expire_offers(10_000 + 30_000, 30_000), vec![o3]);
    assert_eq!(alloc.agent_available("b").unwrap(), r("cpus:1;mem:10"));
}

#[test]
fn dynamic_reservations_through_offers() {
    let mut alloc = Allocator::new();
    alloc.add_framework("f", &[role("db")]);
    alloc.add_agent("a", r("cpus:4;mem:100")).unwrap();
    let o = alloc.allocate(0).remove(0);
    let launched = alloc
        .accept(o.id, &[Operation::Reserve(r("cpus:2;mem:50")), Operation::Launch(r("cpus(db):1;mem(db):10"))], 0, 0)
        .unwrap();
    assert_eq!(launched, vec![r("cpus(db):1;mem(db):10")]);
    assert_eq!(alloc.agent_total("a").unwrap(), &r("cpus:2;mem:50;cpus(db):2;mem(db):50"));
    alloc.add_framework("g", &[role("web")]);
    // Role web sees only what is unreserved.
    let offers = alloc.allocate(1);
    let web: Vec<_> = offers.iter().filter(|o| o.framework == "g").collect();
    assert!(web.iter().all(|o| o.resources.iter().all(|(_, rl, _)| rl.is_any())), "{offers:?}");
    for o in &offers {
        alloc.decline(o.id, 0, 1).unwrap();
    }
    let mine = alloc.allocate(2).into_iter().find(|o| o.framework == "f").unwrap();
    let err = alloc.accept(mine.id, &[Operation::Launch(r("cpus:100"))], 0, 2).unwrap_err();
    assert!(err.to_string().contains("more than the offer has left"), "{err}");
    // A failed accept changes nothing: the offer still stands.
    alloc.accept(mine.id, &[Operation::Unreserve(r("cpus(db):1;mem(db):40"))], 0, 2).unwrap();
    assert_eq!(alloc.agent_total("a").unwrap().scalar_total("cpus"), 4000);
}

#[derive(Debug, Clone)]
enum Event {
    AddAgent(u8),
    RemoveAgent(u8),
    Allocate,
    AcceptHalf,
    DeclineAll(u64),
    FinishTasks,
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..6).prop_map(Event::AddAgent),
        (0u8..6).prop_map(Event::RemoveAgent),
        Just(Event::Allocate),
        Just(Event::Allocate),
        Just(Event::AcceptHalf),
        (0u64..3).prop_map(Event::DeclineAll),
        Just(Event::FinishTasks),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Whatever happens: no agent is ever over-allocated, offers never overlap, reserved
    /// resources go only to their role, and quota is never exceeded.
    #[test]
    fn invariants_hold_under_random_events(events in proptest::collection::vec(arb_event(), 1..60)) {
        let mut alloc = Allocator::new();
        let quota = r("cpus:5");
        alloc.set_role(&role("q"), RoleConfig { weight: 1.0, quota: Some(quota.clone()) }).unwrap();
        for (fw, rl) in [("f1", "q"), ("f2", "web"), ("f3", "web"), ("f4", "ads")] {
            alloc.add_framework(fw, &[role(rl)]);
        }
        let mut tasks: Vec<(String, Role, String, Resources)> = Vec::new();
        let mut now = 0;
        for e in events {
            now += 1000;
            match e {
                Event::AddAgent(i) => {
                    let _ = alloc.add_agent(&format!("a{i}"), r("cpus:4;mem:4096;cpus(ads):1;ports:[100-110]"));
                }
                Event::RemoveAgent(i) => {
                    let id = format!("a{i}");
                    if alloc.remove_agent(&id).is_ok() {
                        for t in tasks.iter().filter(|t| t.2 == id) {
                            alloc.recover_task(&t.0, &t.1, &t.2, &t.3);
                        }
                        tasks.retain(|t| t.2 != id);
                    }
                }
                Event::Allocate => {
                    let offers = alloc.allocate(now);
                    for o in &offers {
                        // Reserved resources only ever go to their own role.
                        prop_assert!(o.resources.iter().all(|(_, rl, _)| rl.is_any() || *rl == o.role));
                    }
                }
                Event::AcceptHalf => {
                    let offers: Vec<_> = alloc.offers().cloned().collect();
                    for o in offers {
                        let mut half = Resources::new();
                        for (name, rl, _) in o.resources.iter() {
                            let m = o.resources.reserved_for(rl).scalar_total(name) / 2;
                            half = half.plus(&Resources::scalar(name, rl, m));
                        }
                        if alloc.accept(o.id, &[Operation::Launch(half.clone())], 0, now).is_ok() && !half.is_empty() {
                            tasks.push((o.framework.clone(), o.role.clone(), o.agent.clone(), half));
                        }
                    }
                }
                Event::DeclineAll(refuse) => {
                    let ids: Vec<_> = alloc.offers().map(|o| o.id).collect();
                    for id in ids {
                        alloc.decline(id, refuse * 1000, now).unwrap();
                    }
                }
                Event::FinishTasks => {
                    for t in tasks.drain(..) {
                        alloc.recover_task(&t.0, &t.1, &t.2, &t.3);
                    }
                }
            }
            // Per agent: outstanding offers and running tasks fit, and add up exactly.
            for i in 0..6u8 {
                let id = format!("a{i}");
                let Some(total) = alloc.agent_total(&id).cloned() else { continue };
                let mut used = Resources::new();
                for o in alloc.offers().filter(|o| o.agent == id) {
                    used = used.plus(&o.resources);
                }
                for t in tasks.iter().filter(|t| t.2 == id) {
                    used = used.plus(&t.3);
                }
                prop_assert!(total.contains(&used), "agent {id} over-allocated: {used} > {total}");
                prop_assert_eq!(alloc.agent_available(&id).unwrap().plus(&used).scalar_total("cpus"), total.scalar_total("cpus"));
            }
            let q = alloc.roles().into_iter().find(|s| s.role == role("q")).unwrap();
            prop_assert!(q.allocated.scalar_total("cpus") <= quota.scalar_total("cpus"), "quota exceeded: {}", q.allocated);
        }
    }

    /// With unbounded demand, the allocator gives each framework exactly what DRF's
    /// progressive filling does: repeatedly, the framework with the lowest dominant share whose
    /// next task still fits gets it (ties to the one that registered first).
    #[test]
    fn allocations_match_progressive_filling(sizes in proptest::collection::vec((1u64..6, 1u64..6), 2..5), weights in proptest::collection::vec(1u8..3, 5)) {
        let (cpus, mem) = (64u64, 64u64);
        let mut alloc = Allocator::new();
        let mut queues = BTreeMap::new();
        for (i, (c, m)) in sizes.iter().enumerate() {
            let name = format!("f{i}");
            let rl = role(&format!("r{i}"));
            alloc.set_role(&rl, RoleConfig { weight: weights[i] as f64, quota: None }).unwrap();
            alloc.add_framework(&name, &[rl]);
            queues.insert(name, Queue { task: r(&format!("cpus:{c};mem:{m}")), left: 10_000, placed: 0 });
        }
        alloc.add_agent("big", r(&format!("cpus:{cpus};mem:{mem}"))).unwrap();
        let got = fill(&mut alloc, &mut queues);

        // The reference: progressive filling by weighted dominant share.
        let mut used = vec![(0u64, 0u64); sizes.len()];
        let (mut free_c, mut free_m) = (cpus, mem);
        loop {
            let share = |i: usize| (used[i].0 as f64 / cpus as f64).max(used[i].1 as f64 / mem as f64) / weights[i] as f64;
            let mut order: Vec<usize> = (0..sizes.len()).collect();
            order.sort_by(|a, b| share(*a).partial_cmp(&share(*b)).unwrap().then(a.cmp(b)));
            let Some(i) = order.into_iter().find(|i| sizes[*i].0 <= free_c && sizes[*i].1 <= free_m) else { break };
            used[i].0 += sizes[i].0;
            used[i].1 += sizes[i].1;
            free_c -= sizes[i].0;
            free_m -= sizes[i].1;
        }
        for (i, (c, _)) in sizes.iter().enumerate() {
            prop_assert_eq!(got[&format!("f{i}")] as u64, used[i].0 / c, "framework f{} (sizes {:?}, weights {:?})", i, sizes, weights);
        }
    }
}
