// The seccomp filter: which system calls the helper refuses itself.
//
// Pure: builds the classic-BPF program as bytes, so that every verdict it
// gives is unit-tested (by running the program) without permissions. The
// default is ALLOW: Deno's runtime makes many system calls we cannot list
// exhaustively, so this is a deny-list of what a TCP_REPAIR helper never
// needs and an attacker would want first: starting programs, reading or
// writing other processes, loading code into the kernel, changing mounts and
// namespaces. A few calls are judged by their arguments, to keep what
// CAP_NET_ADMIN allows to the sockets passt hands over: socket() makes only
// AF_UNIX, AF_INET and AF_INET6 stream sockets (no netlink, no packet or raw
// sockets), ioctl() makes no socket ioctls (routes, interfaces), clone()
// creates no namespace. Everything it refuses fails with EPERM, as if not
// permitted.
//
// The program checks the audit architecture first: system call numbers mean
// different things on different ABIs, so a call made through another ABI of
// the same CPU (i386's int 0x80 on x86_64, AArch32 on aarch64) is refused
// whatever its number. On x86_64 the x32 ABI shares AUDIT_ARCH_X86_64 and
// marks its numbers with bit 30: those are refused too, so the list below
// cannot be bypassed with x32 numbers.

import type { Arch } from "./abi.ts";
import { RuntimeFailure } from "./errors.ts";

// Audit architectures (uapi/linux/audit.h): EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;

/** arch/x86/include/uapi/asm/unistd.h: x32 system call numbers carry this bit */
export const X32_SYSCALL_BIT = 0x40000000;

// Classic BPF opcodes (uapi/linux/bpf_common.h, uapi/linux/filter.h)
export const BPF_LD = 0x00;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_W = 0x00;
export const BPF_ABS = 0x20;
export const BPF_JEQ = 0x10;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_K = 0x00;
/** BPF_MAXINSNS (uapi/linux/bpf_common.h) */
export const BPF_MAXINSNS = 4096;

// Filter return values (uapi/linux/seccomp.h)
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ERRNO = 0x00050000;

// struct seccomp_data (uapi/linux/seccomp.h): int nr; __u32 arch;
// __u64 instruction_pointer; __u64 args[6]. Little-endian on both our
// architectures, so the low half of args[0] is at offset 16.
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
export const SECCOMP_DATA_ARG0_LO = 16;
export const SECCOMP_DATA_ARG1_LO = 24;

const EPERM = 1;
const ENOSYS = 38;

/**
 * clone() flags that create namespaces (uapi/linux/sched.h): CLONE_NEWNS,
 * CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
 * CLONE_NEWNET. Refusing unshare() and setns() means little if clone() may
 * still create them. Deno creates threads with clone(), so clone itself stays.
 */
export const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 |
  0x10000000 | 0x20000000 | 0x40000000;

/**
 * socket() domains the helper uses: AF_UNIX (to passt), AF_INET (the
 * capability check, growing the descriptor table), and AF_INET6. With
 * CAP_NET_ADMIN, an AF_NETLINK socket could reconfigure the host's network
 * and an AF_PACKET one (as root) see all its traffic: both are refused.
 */
export const SOCKET_DOMAINS = [1, /* AF_UNIX */ 2, /* AF_INET */ 10 /* AF_INET6 */] as const;

/**
 * ...and only SOCK_STREAM (1) sockets: the low four bits of the type; the
 * flags SOCK_NONBLOCK and SOCK_CLOEXEC are above them. No raw sockets.
 */
export const SOCK_TYPE_MASK = 0xf;

/**
 * ioctl() requests from SIOCADDRT (0x890b) up to the wireless ones
 * (SIOCIWFIRST 0x8b00 .. SIOCIWLAST 0x8bff) change routes, interfaces and
 * addresses with CAP_NET_ADMIN (uapi/linux/sockios.h, uapi/linux/wireless.h).
 * The whole socket-ioctl range 0x8900..0x8bff is refused; the helper makes
 * none, and Deno's terminal and file ioctls lie elsewhere.
 */
export const SOCKET_IOCTLS = { first: 0x8900, last: 0x8bff } as const;

/** A system call the filter refuses, with its number on each architecture */
export interface RefusedCall {
  readonly name: string;
  /** null where the call does not exist on that architecture */
  readonly x86_64: number | null;
  readonly aarch64: number | null;
}

// Numbers: arch/x86/entry/syscalls/syscall_64.tbl (x86_64) and
// include/uapi/asm-generic/unistd.h (aarch64). Tested against the installed
// kernel headers where they exist.
function call(name: string, x86_64: number | null, aarch64: number | null): RefusedCall {
  return { name, x86_64, aarch64 };
}

/** Every system call refused with EPERM, grouped by why */
export const REFUSED_CALLS: readonly RefusedCall[] = [
  // Starting another program
  call("execve", 59, 221),
  call("execveat", 322, 281),
  // Reading or writing another process
  call("ptrace", 101, 117),
  call("process_vm_readv", 310, 270),
  call("process_vm_writev", 311, 271),
  call("pidfd_getfd", 438, 438),
  call("process_madvise", 440, 440),
  // Loading code into the kernel, replacing it
  call("kexec_load", 246, 104),
  call("kexec_file_load", 320, 294),
  call("init_module", 175, 105),
  call("finit_module", 313, 273),
  call("delete_module", 176, 106),
  call("bpf", 321, 280),
  // Mounts and namespaces
  call("mount", 165, 40),
  call("umount2", 166, 39),
  call("pivot_root", 155, 41),
  call("chroot", 161, 51),
  call("unshare", 272, 97),
  call("setns", 308, 268),
  call("open_tree", 428, 428),
  call("move_mount", 429, 429),
  call("fsopen", 430, 430),
  call("fsconfig", 431, 431),
  call("fsmount", 432, 432),
  call("fspick", 433, 433),
  call("mount_setattr", 442, 442),
  // Interfaces that bypass or widen the filter, or are common exploit aids
  call("io_uring_setup", 425, 425),
  call("io_uring_enter", 426, 426),
  call("io_uring_register", 427, 427),
  call("userfaultfd", 323, 282),
  call("perf_event_open", 298, 241),
  call("open_by_handle_at", 304, 265),
  call("add_key", 248, 217),
  call("request_key", 249, 218),
  call("keyctl", 250, 219),
  // Changing the whole machine (the helper may run as root)
  call("reboot", 169, 142),
  call("swapon", 167, 224),
  call("swapoff", 168, 225),
  call("acct", 163, 89),
  call("sethostname", 170, 161),
  call("setdomainname", 171, 162),
  call("iopl", 172, null),
  call("ioperm", 173, null),
];

/** The clone() system call: allowed, unless it asks for a new namespace */
export const CLONE: Readonly<Record<Arch, number>> = { x86_64: 56, aarch64: 220 };

/** socket(): allowed for SOCKET_DOMAINS and SOCK_STREAM only */
export const SOCKET: Readonly<Record<Arch, number>> = { x86_64: 41, aarch64: 198 };

/** ioctl(): allowed, except the socket ioctls in SOCKET_IOCTLS */
export const IOCTL: Readonly<Record<Arch, number>> = { x86_64: 16, aarch64: 29 };

/**
 * clone3() passes its flags in memory, where a filter cannot look, so it is
 * answered ENOSYS: glibc then falls back to clone(), whose flags are checked.
 */
export const CLONE3: Readonly<Record<Arch, number>> = { x86_64: 435, aarch64: 435 };

/** seccomp(2) itself, which glibc has no wrapper for */
export const SYS_SECCOMP: Readonly<Record<Arch, number>> = { x86_64: 317, aarch64: 277 };

const AUDIT_ARCH: Readonly<Record<Arch, number>> = {
  x86_64: AUDIT_ARCH_X86_64,
  aarch64: AUDIT_ARCH_AARCH64,
};

/** A built filter and what it is for */
export interface SeccompFilter {
  readonly arch: Arch;
  readonly auditArch: number;
  /** SYS_seccomp on this architecture */
  readonly seccompNr: number;
  /** struct sock_filter[], 8 bytes each: u16 code, u8 jt, u8 jf, u32 k */
  readonly program: Uint8Array;
  /** Number of instructions in the program */
  readonly length: number;
  /** Names of the calls refused with EPERM on this architecture */
  readonly refused: readonly string[];
}

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function load(offset: number): Insn {
  return { code: BPF_LD | BPF_W | BPF_ABS, jt: 0, jf: 0, k: offset };
}

function jump(op: number, k: number, jt: number, jf: number): Insn {
  return { code: BPF_JMP | op | BPF_K, jt, jf, k };
}

function ret(k: number): Insn {
  return { code: BPF_RET | BPF_K, jt: 0, jf: 0, k };
}

const DENY = ret(SECCOMP_RET_ERRNO | EPERM);
const ALLOW = ret(SECCOMP_RET_ALLOW);

/** The architectures the filter knows, as Deno.build.arch spells them */
export const SUPPORTED_ARCHES: readonly Arch[] = ["x86_64", "aarch64"];

/**
 * Builds the filter for `arch` (Deno.build.arch). An architecture it does not
 * know fails closed: the numbers would mean other calls there, so there is no
 * filter to install and the helper must not run unconfined.
 */
export function buildSeccompFilter(arch: string): SeccompFilter {
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new RuntimeFailure(
      `Can't build the seccomp filter: unsupported architecture "${arch}" ` +
        `(system call numbers are known for ${SUPPORTED_ARCHES.join(" and ")} only)`,
    );
  }
  const refused = REFUSED_CALLS.filter((c) => c[arch] !== null);
  const insns: Insn[] = [
    // Another ABI's numbers mean other calls: refuse them all
    load(SECCOMP_DATA_ARCH),
    jump(BPF_JEQ, AUDIT_ARCH[arch], 1, 0),
    DENY,
    load(SECCOMP_DATA_NR),
  ];
  if (arch === "x86_64") {
    // x32 calls: same audit arch, numbers with bit 30 set
    insns.push(jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1), DENY);
  }
  for (const c of refused) insns.push(jump(BPF_JEQ, c[arch]!, 0, 1), DENY);
  insns.push(jump(BPF_JEQ, CLONE3[arch], 0, 1), ret(SECCOMP_RET_ERRNO | ENOSYS));
  // Calls judged by their arguments. Each block loads an argument over the
  // number in the accumulator, so each ends in its own verdict; a call that
  // is not the block's skips it with the number intact.
  const [unix, inet, inet6] = SOCKET_DOMAINS;
  insns.push(
    // clone(flags, ...): no CLONE_NEW*
    jump(BPF_JEQ, CLONE[arch], 0, 4),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JSET, CLONE_NAMESPACE_FLAGS, 0, 1),
    DENY,
    ALLOW,
    // socket(domain, type, protocol): AF_UNIX, AF_INET or AF_INET6, SOCK_STREAM
    jump(BPF_JEQ, SOCKET[arch], 0, 9),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ, unix, 2, 0),
    jump(BPF_JEQ, inet, 1, 0),
    jump(BPF_JEQ, inet6, 0, 3),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JSET, SOCK_TYPE_MASK & ~1, 1, 0), // any type bit but bit 0: not SOCK_STREAM
    jump(BPF_JSET, 1, 1, 0),
    DENY,
    ALLOW,
    // ioctl(fd, request, ...): no socket ioctls
    jump(BPF_JEQ, IOCTL[arch], 0, 5),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JGE, SOCKET_IOCTLS.last + 1, 2, 0),
    jump(BPF_JGE, SOCKET_IOCTLS.first, 0, 1),
    DENY,
    ALLOW,
    // Everything else
    ALLOW,
  );
  return {
    arch,
    auditArch: AUDIT_ARCH[arch],
    seccompNr: SYS_SECCOMP[arch],
    program: encode(insns),
    length: insns.length,
    refused: refused.map((c) => c.name),
  };
}

function encode(insns: readonly Insn[]): Uint8Array {
  const bytes = new Uint8Array(insns.length * 8);
  const view = new DataView(bytes.buffer);
  insns.forEach((insn, i) => {
    view.setUint16(i * 8, insn.code, true);
    view.setUint8(i * 8 + 2, insn.jt);
    view.setUint8(i * 8 + 3, insn.jf);
    view.setUint32(i * 8 + 4, insn.k >>> 0, true);
  });
  return bytes;
}
