//! The probe engine directly: several windows at once over one loaded program set.

use recap_agent::{
    families::raw::RawCounts,
    families::{syscalls::per_syscall, Family, FamilyStatus},
    probes::ProbeEngine,
    targets::{Target, TargetSpec},
};
use recap_tests::*;

fn getppid_calls(counts: &RawCounts) -> u64 {
    per_syscall(counts)[110].0 // x86-64 getppid
}

#[test]
fn two_windows_share_one_program_set_and_count_apart() {
    if !require_root() {
        return;
    }
    let (a, b) = (TestCgroup::new("multi-a"), TestCgroup::new("multi-b"));
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = |getppid| WorkloadPlan {
        connects: 2,
        refused: 0,
        kept_open: 0,
        bytes_per_connect: 10,
        datagrams: 0,
        datagram_size: 0,
        execs: 1,
        getppid,
        spin_ms: 0,
    };
    let mut wa = Workload::start(&a, &plan(3_000), &sink, closed_port(), udp_port);
    let mut wb = Workload::start(&b, &plan(5_000), &sink, closed_port(), udp_port);

    // Loaded for two windows, as a one-shot command sizes it: the per-window maps have room for
    // exactly two, and a third is refused.
    let mut engine = ProbeEngine::load(2).expect("loading the program set");
    let families = [Family::SYSCALLS, Family::TCP, Family::PROC];
    let target = |cg: &TestCgroup| {
        Target::resolve(&TargetSpec::Cgroup {
            path: cg.dir.clone(),
        })
        .unwrap()
    };
    let win_a = engine.open(&target(&a), &families).unwrap();
    let win_b = engine.open(&target(&b), &families).unwrap();
    assert_ne!(win_a.slot, win_b.slot);
    assert!(matches!(
        engine.open(&target(&a), &[Family::TCP]),
        Err(recap_agent::families::engine_error::EngineError::NoFreeSlot(2))
    ));
    // One global sys_exit program, shared by both windows.
    let sys_exit_progs = residue()
        .iter()
        .filter(|l| l.contains("name recap_sys_exit"))
        .count();
    assert_eq!(sys_exit_progs, 1);

    wa.go();
    wb.go();
    wa.wait_done();
    wb.wait_done();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let counts_a = engine.close(win_a).unwrap();
    // B is still counting after A closed: the shared hook stays attached for it.
    let counts_b_mid = engine.read(&win_b).unwrap();
    let counts_b = engine.close(win_b).unwrap();

    use recap_common::Counter;
    assert_eq!(getppid_calls(&counts_a), 3_000);
    assert_eq!(getppid_calls(&counts_b), 5_000);
    assert_eq!(counts_b_mid, counts_b);
    for c in [&counts_a, &counts_b] {
        assert_eq!(c.get(Counter::TcpConnectEstablished), 2);
        assert_eq!(c.get(Counter::ProcExecs), 1);
    }
    // A slot is reused cleanly: a new window starts from zero.
    let win_c = engine.open(&target(&a), &[Family::SYSCALLS]).unwrap();
    let fresh = engine.read(&win_c).unwrap();
    assert_eq!(getppid_calls(&fresh), 0);
    engine.close(win_c).unwrap();
    drop(engine);
    wa.stop();
    wb.stop();
    assert_no_residue();
}

/// Two windows on one cgroup: its socket programs' tag is the cgroup's (per attach type), so a
/// second window's would make the first one's programs count into the second's slot, twice.
/// The second gets `tcp` unavailable with the reason, the first stays exact, and once both are
/// closed a new window on the cgroup gets `tcp` again.
#[test]
fn a_second_window_on_a_cgroup_does_not_take_the_first_ones_sockets() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("shared-tcp");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = WorkloadPlan {
        connects: 3,
        refused: 0,
        kept_open: 0,
        bytes_per_connect: 10,
        datagrams: 0,
        datagram_size: 0,
        execs: 0,
        getppid: 0,
        spin_ms: 0,
    };
    let mut work = Workload::start(&cg, &plan, &sink, closed_port(), udp_port);
    let mut engine = ProbeEngine::load(3).expect("loading the program set");
    let target = Target::resolve(&TargetSpec::Cgroup {
        path: cg.dir.clone(),
    })
    .unwrap();
    let first = engine.open(&target, &[Family::TCP]).unwrap();
    let second = engine.open(&target, &[Family::TCP]).unwrap();
    assert_eq!(first.families[&Family::TCP], FamilyStatus::Ok);
    match &second.families[&Family::TCP] {
        FamilyStatus::Unavailable { reason } => {
            assert!(
                reason.contains("already counts this cgroup's sockets"),
                "{reason}"
            )
        }
        other => panic!("the second window got tcp: {other:?}"),
    }
    work.go();
    work.wait_done();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second_counts = engine.close(second).unwrap();
    let first_counts = engine.close(first).unwrap();
    use recap_common::Counter;
    assert_eq!(first_counts.get(Counter::TcpConnectEstablished), 3);
    assert_eq!(second_counts.get(Counter::TcpConnectEstablished), 0);
    let again = engine.open(&target, &[Family::TCP]).unwrap();
    assert_eq!(
        again.families[&Family::TCP],
        FamilyStatus::Ok,
        "the ended window's tag does not hold the cgroup"
    );
    engine.close(again).unwrap();
    drop(engine);
    work.stop();
    assert_no_residue();
}
