//! Reading kernel structs whose layout depends on the kernel build. User space finds the
//! offsets in the running kernel's BTF and writes them into these read-only globals before
//! the programs are loaded.

use aya_ebpf::helpers::bpf_probe_read_kernel;

#[unsafe(no_mangle)]
static RECAP_OFF_TASK_PID: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_TGID: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_CGROUP_KN: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_KERNFS_ID: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_CGROUP_ROOT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_ROOT_HIER: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_CGROUP_SELF: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_CSS_PARENT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_SIGNAL: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_SIGNAL_THREADS: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_THREAD_NODE: u64 = 0;

#[unsafe(no_mangle)]
static RECAP_OFF_BIO_OPF: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_RQ_BIO: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_BIO_SIZE: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_BIO_BLKG: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_BIO_BDEV: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_BDEV_DEV: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_BLKG_BLKCG: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_CSS_CGROUP: u64 = 0;

#[unsafe(no_mangle)]
static RECAP_OFF_TASK_MIN_FLT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_MAJ_FLT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_COMM: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_TASK_MM: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_MM_RSS_STAT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_PCPU_COUNT: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_SIZE_PCPU_COUNTER: u64 = 0;

#[unsafe(no_mangle)]
static RECAP_OFF_SOCK_CGRP_DATA: u64 = 0;
#[unsafe(no_mangle)]
static RECAP_OFF_SKCD_CGROUP: u64 = 0;

#[inline(always)]
fn offset(global: &'static u64) -> u64 {
    // Volatile so the compiler cannot fold the pre-load value 0 into the code.
    // SAFETY: `global` is a reference to a static, so aligned and valid for ever; the verifier
    // reads the frozen read-only global as the constant user space wrote.
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper copies `size_of::<T>()` bytes at a kernel address into a stack value and
    // returns an error for an address it cannot read, never faulting; every `T` read here is an
    // integer or an array of them, valid for any bytes.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// `task->pid` (the thread id) of a `struct task_struct *`.
#[inline(always)]
pub fn task_tid(task: u64) -> u32 {
    read::<u32>(task + offset(&RECAP_OFF_TASK_PID)).unwrap_or(0)
}

/// `task->tgid` (the process id) of a `struct task_struct *`.
#[inline(always)]
pub fn task_tgid(task: u64) -> u32 {
    read::<u32>(task + offset(&RECAP_OFF_TASK_TGID)).unwrap_or(0)
}

/// The cgroup id (kernfs inode number) of a `struct cgroup *`, if it belongs to the cgroup v2
/// hierarchy (hierarchy id 0). v1 hierarchies have ids of their own, which may collide.
#[inline(always)]
pub fn cgroup_v2_id(cgroup: u64) -> Option<u64> {
    let root: u64 = read(cgroup + offset(&RECAP_OFF_CGROUP_ROOT))?;
    let hierarchy: i32 = read(root + offset(&RECAP_OFF_ROOT_HIER))?;
    if hierarchy != 0 {
        return None;
    }
    let kn: u64 = read(cgroup + offset(&RECAP_OFF_CGROUP_KN))?;
    read(kn + offset(&RECAP_OFF_KERNFS_ID))
}

/// The parent of a `struct cgroup *` (`cgrp->self.parent`, a css embedded in the parent
/// cgroup), or 0 at the root.
#[inline(always)]
pub fn cgroup_parent(cgroup: u64) -> u64 {
    let own_css = offset(&RECAP_OFF_CGROUP_SELF);
    let parent_css: u64 = read(cgroup + own_css + offset(&RECAP_OFF_CSS_PARENT)).unwrap_or(0);
    if parent_css == 0 {
        0
    } else {
        parent_css - own_css
    }
}

/// A `struct bio *`'s operation (`bi_opf & REQ_OP_MASK`: 0 read, 1 write, others), size
/// in bytes (`bi_iter.bi_size`) and device (`bi_bdev->bd_dev`).
#[inline(always)]
pub fn bio_op_size_dev(bio: u64) -> (u32, u32, u32) {
    let opf: u32 = read(bio + offset(&RECAP_OFF_BIO_OPF)).unwrap_or(u32::MAX);
    let size: u32 = read(bio + offset(&RECAP_OFF_BIO_SIZE)).unwrap_or(0);
    let bdev: u64 = read(bio + offset(&RECAP_OFF_BIO_BDEV)).unwrap_or(0);
    let dev: u32 = if bdev == 0 {
        0
    } else {
        read(bdev + offset(&RECAP_OFF_BDEV_DEV)).unwrap_or(0)
    };
    (opf & 0xff, size, dev)
}

/// The `struct cgroup *` a bio is charged to (`bi_blkg->blkcg->css.cgroup`: the blkio/io
/// hierarchy's, v1 on hybrid hosts), 0 if it has none.
#[inline(always)]
pub fn bio_cgroup(bio: u64) -> u64 {
    let blkg: u64 = read(bio + offset(&RECAP_OFF_BIO_BLKG)).unwrap_or(0);
    if blkg == 0 {
        return 0;
    }
    let blkcg: u64 = read(blkg + offset(&RECAP_OFF_BLKG_BLKCG)).unwrap_or(0);
    if blkcg == 0 {
        return 0;
    }
    // `css` is `struct blkcg`'s first member.
    read(blkcg + offset(&RECAP_OFF_CSS_CGROUP)).unwrap_or(0)
}

/// `rq->bio`: a `struct request *`'s first bio.
#[inline(always)]
pub fn request_bio(rq: u64) -> u64 {
    read(rq + offset(&RECAP_OFF_RQ_BIO)).unwrap_or(0)
}

/// The kernfs id of a `struct cgroup *` of any hierarchy (the inode number of its directory).
#[inline(always)]
pub fn cgroup_kernfs_id(cgroup: u64) -> Option<u64> {
    let kn: u64 = read(cgroup + offset(&RECAP_OFF_CGROUP_KN))?;
    read(kn + offset(&RECAP_OFF_KERNFS_ID))
}

/// `task->min_flt` and `task->maj_flt`: the thread's page faults as the kernel counts them.
#[inline(always)]
pub fn task_faults(task: u64) -> (u64, u64) {
    (
        read::<u64>(task + offset(&RECAP_OFF_TASK_MIN_FLT)).unwrap_or(0),
        read::<u64>(task + offset(&RECAP_OFF_TASK_MAJ_FLT)).unwrap_or(0),
    )
}

/// `task->comm`.
#[inline(always)]
pub fn task_comm(task: u64) -> [u8; 16] {
    read::<[u8; 16]>(task + offset(&RECAP_OFF_TASK_COMM)).unwrap_or([0; 16])
}

/// A task's resident memory in bytes as the kernel's OOM report counts it: `mm->rss_stat[]`
/// (percpu counters' global value, what `get_mm_counter` reads) of file, anon and shmem pages
/// (`MM_FILEPAGES` 0, `MM_ANONPAGES` 1, `MM_SHMEMPAGES` 3). 0 if it has no memory left.
#[inline(always)]
pub fn task_rss_bytes(task: u64) -> u64 {
    let mm: u64 = read(task + offset(&RECAP_OFF_TASK_MM)).unwrap_or(0);
    if mm == 0 {
        return 0;
    }
    let stat = mm + offset(&RECAP_OFF_MM_RSS_STAT);
    let stride = offset(&RECAP_SIZE_PCPU_COUNTER);
    let count = offset(&RECAP_OFF_PCPU_COUNT);
    let mut pages: i64 = 0;
    for member in [0u64, 1, 3] {
        pages += read::<i64>(stat + member * stride + count)
            .unwrap_or(0)
            .max(0);
    }
    pages as u64 * 4096
}

/// `&task->signal->thread_head`: the list of a process's threads (linked by `thread_node`).
#[inline(always)]
pub fn thread_list_head(task: u64) -> u64 {
    let signal: u64 = read(task + offset(&RECAP_OFF_TASK_SIGNAL)).unwrap_or(0);
    if signal == 0 {
        return 0;
    }
    signal + offset(&RECAP_OFF_SIGNAL_THREADS)
}

/// `node->next` of a `struct list_head *`.
#[inline(always)]
pub fn list_next(node: u64) -> u64 {
    if node == 0 {
        return 0;
    }
    read(node).unwrap_or(0)
}

/// The `struct task_struct *` whose `thread_node` is `node`.
#[inline(always)]
pub fn thread_of_node(node: u64) -> u64 {
    node - offset(&RECAP_OFF_TASK_THREAD_NODE)
}

/// The syscall number saved in a `struct pt_regs *` (x86-64 `orig_ax`).
#[inline(always)]
pub fn syscall_nr(regs: u64) -> Option<u64> {
    read(regs + recap_common::offsets::PT_REGS_ORIG_AX)
}

/// The cgroup v2 id of a `sock_ops` program's socket (`sk->sk_cgrp_data.cgroup`), 0 if it has
/// none or it cannot be read. The socket is taken as a typed `struct tcp_sock *` (the verifier
/// allows field offsets on those, not on the program's own socket pointer).
#[inline(always)]
pub fn sock_cgroup_id(sk: *mut aya_ebpf::bindings::bpf_sock) -> u64 {
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the context's non-null socket pointer, which the helper takes; it returns
    // null unless the socket is a full TCP socket.
    let tcp = unsafe { aya_ebpf::helpers::generated::bpf_skc_to_tcp_sock(sk.cast()) };
    if tcp.is_null() {
        return 0;
    }
    let field = tcp as u64 + offset(&RECAP_OFF_SOCK_CGRP_DATA) + offset(&RECAP_OFF_SKCD_CGROUP);
    // SAFETY: a load through a BTF-typed `struct tcp_sock *` at offsets the verifier reads as
    // constants (read-only globals): it checks them against the type and makes the load a
    // fault-checked one (a bad address reads 0).
    let cgroup = unsafe { core::ptr::read_volatile(field as *const u64) };
    if cgroup == 0 {
        return 0;
    }
    cgroup_v2_id(cgroup).unwrap_or(0)
}
