//! A seccomp filter for the sandbox (handed to `bwrap --seccomp FD`): a
//! deny-list of system calls a function has no business making, answered
//! with `EPERM` — kernel keyrings, BPF, perf, io_uring, module and mount
//! APIs, ptrace and cross-process memory access, clock and reboot calls —
//! plus every system call of a foreign ABI (32-bit x86, x32). Most of these
//! already fail without capabilities; the filter shrinks the kernel surface
//! a function can reach. Built for x86_64 only; elsewhere there is no filter
//! (and the driver says so).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

#[derive(Clone, Copy)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
/// x32 system calls have this bit set in their number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The denied system calls.
#[cfg(target_arch = "x86_64")]
pub(crate) fn denied() -> Vec<u32> {
    [
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_bpf,
        libc::SYS_chroot,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_delete_module,
        libc::SYS_finit_module,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fsopen,
        libc::SYS_fspick,
        libc::SYS_init_module,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_io_uring_setup,
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS_kcmp,
        libc::SYS_kexec_file_load,
        libc::SYS_kexec_load,
        libc::SYS_keyctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_modify_ldt,
        libc::SYS_mount,
        libc::SYS_mount_setattr,
        libc::SYS_move_mount,
        libc::SYS_name_to_handle_at,
        libc::SYS_nfsservctl,
        libc::SYS_open_by_handle_at,
        libc::SYS_open_tree,
        libc::SYS_perf_event_open,
        libc::SYS_pivot_root,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_ptrace,
        libc::SYS_quotactl,
        libc::SYS_reboot,
        libc::SYS_request_key,
        libc::SYS_setns,
        libc::SYS_settimeofday,
        libc::SYS_swapoff,
        libc::SYS_swapon,
        libc::SYS__sysctl,
        libc::SYS_syslog,
        libc::SYS_umount2,
        libc::SYS_uselib,
        libc::SYS_userfaultfd,
        libc::SYS_vhangup,
    ]
    .into_iter()
    .map(|n| n as u32)
    .collect()
}

/// The BPF program as bytes (`struct sock_filter[]`), as `bwrap --seccomp`
/// reads it; `None` where no filter is built.
pub(crate) fn program() -> Option<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        let deny = denied();
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let mut p: Vec<Insn> = Vec::new();
        // Index of the final "deny" instruction, for jump offsets.
        let n_checks = deny.len() + 1; // x32 check + one per call
        let deny_at = 4 + n_checks + 1; // after: ld arch, jeq, ret, ld nr, checks, allow
        let ins = |code, jt, jf, k| Insn { code, jt, jf, k };
        p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARCH));
        p.push(ins(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH));
        p.push(ins(BPF_RET_K, 0, 0, eperm));
        p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
        let jump = |p: &mut Vec<Insn>, code, k| {
            let here = p.len();
            let jt = u8::try_from(deny_at - here - 1).expect("filter fits 8-bit jumps");
            p.push(ins(code, jt, 0, k));
        };
        jump(&mut p, BPF_JMP_JGE_K, X32_SYSCALL_BIT);
        for nr in deny {
            jump(&mut p, BPF_JMP_JEQ_K, nr);
        }
        p.push(ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
        debug_assert_eq!(p.len(), deny_at);
        p.push(ins(BPF_RET_K, 0, 0, eperm));
        let mut bytes = Vec::with_capacity(p.len() * 8);
        for i in p {
            bytes.extend_from_slice(&i.code.to_ne_bytes());
            bytes.push(i.jt);
            bytes.push(i.jf);
            bytes.extend_from_slice(&i.k.to_ne_bytes());
        }
        Some(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// A pipe holding `program` for bwrap to read: the read end (close-on-exec
/// in this process; the child clears the flag on its copy).
pub(crate) fn program_fd(program: &[u8]) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A few hundred bytes: far below the pipe's capacity, never blocks.
    let mut off = 0;
    while off < program.len() {
        // SAFETY: writes from a live slice to an open fd.
        let n = unsafe {
            libc::write(
                w.as_raw_fd(),
                program[off..].as_ptr().cast(),
                program.len() - off,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    drop(w);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn program_shape() {
        let p = program().unwrap();
        assert_eq!(p.len() % 8, 0);
        let n = p.len() / 8;
        assert_eq!(n, 4 + 1 + denied().len() + 2);
        // Last two: allow, then EPERM.
        let k = |i: usize| u32::from_ne_bytes(p[i * 8 + 4..i * 8 + 8].try_into().unwrap());
        assert_eq!(k(n - 2), SECCOMP_RET_ALLOW);
        assert_eq!(k(n - 1), SECCOMP_RET_ERRNO | libc::EPERM as u32);
        // Every check jumps exactly to the final instruction.
        for i in 4..n - 2 {
            let jt = p[i * 8 + 2] as usize;
            assert_eq!(i + 1 + jt, n - 1, "insn {i}");
        }
    }
}
