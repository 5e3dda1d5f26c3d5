//! Scheduling of the thread that moves packets.
//!
//! Under load, a packet's latency through a userspace tunnel is mostly the time its
//! thread waits for a CPU behind busy programs (measured here: 2-3 ms behind an iperf3
//! on two cores with normal scheduling, about 0.5 ms with SCHED_RR). The kernel's own
//! network processing never waits like that. The lowest real-time priority is enough
//! to be picked first; the kernel's real-time throttling
//! (`kernel.sched_rt_runtime_us`, 95 % by default) still leaves other programs time on
//! that CPU if the node ever spins.
//!
//! Off by default (`node.realtime`): when the CPU is saturated, a real-time node takes
//! it from the programs that send and receive through the tunnel, and a UDP flood then
//! loses more at the receiving program than at the sender's tunnel queue.
//!
//! The two system calls have no safe wrapper in the crates used here; they are the
//! only `unsafe` in the workspace.
#![allow(unsafe_code)]

use std::io;

/// Lowest SCHED_RR priority.
const PRIORITY: libc::c_int = 1;

/// Gives the calling thread SCHED_RR at the lowest priority. Threads it creates later
/// start with normal scheduling (SCHED_RESET_ON_FORK).
pub fn realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread and `param` is a valid sched_param.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the calling thread runs with a real-time policy.
pub fn is_realtime() -> bool {
    // SAFETY: pid 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0 && (policy & !libc::SCHED_RESET_ON_FORK) == libc::SCHED_RR
}
