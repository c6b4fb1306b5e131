"""The local backend's seccomp filter, built with libseccomp (through pyseccomp) and handed to bubblewrap.

Modelled on the container runtimes' default profile: everything is allowed except the calls that
reach the kernel's rarely used or privileged corners, or another process's memory. bubblewrap loads
the filter after it has set up the namespaces and right before it executes the runner, so its own
mount and unshare calls are unaffected; the runner and everything the program starts inherit it.

Refused calls fail with EPERM, except clone3, which fails with ENOSYS: its flags sit in memory where a
filter cannot read them, and the C libraries fall back to clone (whose flags the filter checks) only
on ENOSYS. Calls made through another architecture's ABI (i386 `int 0x80`, x32) kill the process:
libseccomp's default for a foreign architecture.
"""

from __future__ import annotations

import errno
import tempfile

# Refused with EPERM. Each line: what the group reaches.
DENIED_SYSCALLS = (
    # tracing or reading another process: the runner is same-uid as the program
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    # kernel attack surface rarely needed by programs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    # file systems and namespaces
    "mount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "pivot_root", "chroot", "unshare", "setns", "name_to_handle_at", "open_by_handle_at",
    "quotactl", "quotactl_fd", "swapon", "swapoff",
    # the machine itself
    "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "acct", "settimeofday", "clock_settime", "clock_adjtime", "syslog", "vhangup", "ioperm", "iopl",
    "lookup_dcookie", "fanotify_init",
    # NUMA placement of memory (another process's with migrate_pages and move_pages)
    "mbind", "set_mempolicy", "migrate_pages", "move_pages",
    # obsolete calls
    "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "create_module", "get_kernel_syms", "query_module",
)
# clone's namespace flags (the first argument on x86_64 and arm64): a new namespace is refused.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}
# personality() flags that weaken the process: no address-space randomisation, executable data.
PERSONALITY_FLAGS = {"ADDR_NO_RANDOMIZE": 0x0040000, "READ_IMPLIES_EXEC": 0x0400000}


def build_filter_bpf() -> bytes:
    """The compiled filter (BPF), as bubblewrap's `--seccomp FD` reads it."""
    import pyseccomp  # loads libseccomp: only the local backend needs it

    syscall_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    refuse = pyseccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        if _exists(pyseccomp, name):  # some are absent on some architectures (ioperm on arm64)
            syscall_filter.add_rule(refuse, name)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        syscall_filter.add_rule(refuse, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    # personality(0xffffffff) only queries, so a flag counts when any other bit of the value is clear.
    # (libseccomp takes one comparison per argument and rule, hence one rule per other bit.)
    for flag in PERSONALITY_FLAGS.values():
        for clear_bit in (1 << bit for bit in range(32) if 1 << bit != flag):
            syscall_filter.add_rule(
                refuse, "personality", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag | clear_bit, flag))
    syscall_filter.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as compiled:
        syscall_filter.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read()


def _exists(pyseccomp, name: str) -> bool:
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) >= 0
