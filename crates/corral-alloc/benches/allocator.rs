//! `cargo bench -p corral-alloc`: one allocation cycle at 10,000 agents and 1,000 frameworks,
//! and placement throughput for 1,000,000 tasks over 10,000 agents. Prints a markdown table.

use std::time::{Duration, Instant};

use corral_alloc::{Allocator, Operation, Resources, Role};

const AGENTS: usize = 10_000;
const FRAMEWORKS: usize = 1_000;
const ROLES: usize = 10;

fn agent_resources() -> Resources {
    Resources::parse("cpus:32;mem:131072;disk:1000000;ports:[31000-32000]").unwrap()
}

fn cluster() -> Allocator {
    let mut alloc = Allocator::new();
    for f in 0..FRAMEWORKS {
        alloc.add_framework(&format!("fw-{f:04}"), &[Role::parse(&format!("role-{}", f % ROLES)).unwrap()]);
    }
    for a in 0..AGENTS {
        alloc.add_agent(&format!("agent-{a:05}"), agent_resources()).unwrap();
    }
    alloc
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // Allocation cycle: every agent free, every framework hungry; each cycle's offers are
    // declined (refuse 0) so the next cycle has the same work.
    let mut alloc = cluster();
    let mut cycles = Vec::new();
    for i in 0..7 {
        let start = Instant::now();
        let offers = alloc.allocate(i);
        let took = start.elapsed();
        assert_eq!(offers.len(), AGENTS);
        for o in offers {
            alloc.decline(o.id, 0, i).unwrap();
        }
        if i > 1 {
            cycles.push(took);
        }
    }
    let cycle_median = percentile(&mut cycles, 0.5);

    // Placement: 1,000,000 tasks of <0.25 cpus, 1 GiB> on 10,000 agents of 32 cpus; each offer
    // is filled with as many of its framework's queued tasks as fit; cycles until all placed.
    let mut alloc = cluster();
    let task = Resources::parse("cpus:0.25;mem:1024").unwrap();
    let per_framework = 1_000_000 / FRAMEWORKS;
    let mut left = vec![per_framework; FRAMEWORKS];
    let mut placed = 0usize;
    let start = Instant::now();
    let mut now = 0;
    while placed < 1_000_000 {
        now += 1;
        let offers = alloc.allocate(now);
        if offers.is_empty() {
            break;
        }
        for o in offers {
            let f: usize = o.framework[3..].parse().unwrap();
            let fits =
                (o.resources.scalar_total("cpus") / 250).min(o.resources.scalar_total("mem") / 1_024_000) as usize;
            let n = fits.min(left[f]);
            let ops: Vec<Operation> = (0..n).map(|_| Operation::Launch(task.clone())).collect();
            alloc.accept(o.id, &ops, 0, now).unwrap();
            left[f] -= n;
            placed += n;
            if left[f] == 0 {
                alloc.suppress(&o.framework, &o.role);
            }
        }
    }
    let placement = start.elapsed();
    println!("| benchmark | result |");
    println!("|---|---:|");
    println!(
        "| allocation cycle, {AGENTS} agents x {FRAMEWORKS} frameworks (median of 5) | {:.1} ms |",
        cycle_median.as_secs_f64() * 1000.0
    );
    println!(
        "| placement of {placed} tasks over {AGENTS} agents | {:.2} s, {:.0} tasks/s |",
        placement.as_secs_f64(),
        placed as f64 / placement.as_secs_f64()
    );
}
