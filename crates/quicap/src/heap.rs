//! Giving freed heap memory back to the kernel.
//!
//! glibc's allocator keeps the pages of freed memory for reuse: after a traffic burst
//! (queues full of packets on every link) a node's resident size stayed near its peak,
//! 70 MB against 12 MB idle after `bench/rss.sh`'s load, although all but a few MB of
//! it was free. The node hands those pages back when it falls idle
//! (`daemon::routing`). The call has no safe wrapper in the crates used here; with
//! `sched`'s calls and the TCP link's TCP_INFO read (`link::tcp`) it is the only
//! `unsafe` in the workspace.
#![allow(unsafe_code)]

/// Returns the free pages of the heap to the kernel; does nothing where the allocator
/// is not glibc's. It walks the whole heap: call it when idle, not per packet.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
