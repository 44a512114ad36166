//! The probe engine directly: several windows at once over one loaded program set.

use recap_agent::{
    families::{syscalls::per_syscall, Family},
    probes::{ProbeEngine, RawCounts},
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
        Err(recap_agent::probes::EngineError::NoFreeSlot(2))
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
