use videoagent::agent::execute::{ExecuteConfig, execute_plan, expert_plan, plan_subgoals};
use videoagent::agent::motion::MotionParams;
use videoagent::env::World;
use videoagent::env::tabletop::{Tabletop, TaskKind};

fn pos(obs: &videoagent::env::Observation, name: &str) -> [f32; 2] {
    let o = obs.objects.iter().find(|o| o.name == name).unwrap();
    [o.x, o.y]
}
fn d(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

fn main() {
    let size: u32 = std::env::args().nth(1).map_or(32, |s| s.parse().unwrap());
    let task = TaskKind::PickPlace;
    for seed in 0..10u64 {
        for view in 0..3 {
            let mut world = Tabletop::new(64).unwrap();
            let s = 1_000_000 + seed;
            let plan = expert_plan(&mut world, task.name(), view, s, size).unwrap();
            let obs = world.observe().unwrap();
            let target = pos(&obs, "peg");
            let block0 = pos(&obs, "ring");
            let goals = plan_subgoals(&world, &obs, task, &plan, &MotionParams::default()).unwrap();
            let end = *goals.object_path.last().unwrap();
            let r = execute_plan(
                &mut world,
                task.name(),
                &plan,
                &ExecuteConfig::default(),
                None,
            )
            .unwrap();
            let fin = world.observe().unwrap();
            let block = pos(&fin, "ring");
            let vis: Vec<[f32; 2]> = fin
                .mask_pixels("ring")
                .into_iter()
                .filter_map(|(x, y)| {
                    world.pixel_to_table([x as f32 + 0.5, y as f32 + 0.5], 64, 0.0)
                })
                .collect();
            let n = vis.len().max(1) as f32;
            let vc = [
                vis.iter().map(|p| p[0]).sum::<f32>() / n,
                vis.iter().map(|p| p[1]).sum::<f32>() / n,
            ];
            let g = fin.gripper;
            if !r.success {
                println!(
                    "   visible px {} visible centre->true {:.3} visible->planned end {:.3} gripper ({:.2},{:.2},{:.2}) block ({:.2},{:.2}) target ({:.2},{:.2}) end ({:.2},{:.2})",
                    vis.len(),
                    d(vc, block),
                    d(vc, end),
                    g.x,
                    g.y,
                    g.z,
                    block[0],
                    block[1],
                    target[0],
                    target[1],
                    end[0],
                    end[1]
                );
                println!(
                    "v{view} s{seed}: steps {} | block0->target {:.3} | planned end->target {:.3} | final block->target {:.3} | final block->planned end {:.3} | {:?}",
                    r.steps,
                    d(block0, target),
                    d(end, target),
                    d(block, target),
                    d(block, end),
                    r.failure
                );
            }
        }
    }
}
