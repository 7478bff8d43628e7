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
// sockets, no MPTCP or SCTP), ioctl() makes no socket ioctls (routes,
// interfaces) and no TUN ioctls (new or persistent interfaces), prctl() may
// make the process non-dumpable but never dumpable again, clone() creates no
// namespace. Everything it refuses fails with EPERM, as if not permitted.
// A call numbered above the newest this file knows (NEWEST_CALL) is answered
// ENOSYS, as by an older kernel: a call added later cannot slip through a
// deny-list written before it existed, and libc falls back as it would there.
//
// That first stage must let Deno start and the helper find its socket. Once
// connected, a second, much tighter stage is added: an allow-list of what
// serving passt needs (buildServingFilter() below). Both can refuse by
// killing the process instead (--seccomp-kill): a refusal then cannot go
// unnoticed.
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
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_W = 0x00;
export const BPF_ABS = 0x20;
export const BPF_JEQ = 0x10;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_AND = 0x50;
export const BPF_K = 0x00;
/** BPF_MAXINSNS (uapi/linux/bpf_common.h) */
export const BPF_MAXINSNS = 4096;

// Filter return values (uapi/linux/seccomp.h)
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ERRNO = 0x00050000;
/** Kills the whole process (all threads) with SIGSYS: Linux 4.14 and later */
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;

// struct seccomp_data (uapi/linux/seccomp.h): int nr; __u32 arch;
// __u64 instruction_pointer; __u64 args[6]. Little-endian on both our
// architectures, so the low half of args[0] is at offset 16.
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
export const SECCOMP_DATA_ARG0_LO = 16;
export const SECCOMP_DATA_ARG0_HI = 20;
export const SECCOMP_DATA_ARG1_LO = 24;
export const SECCOMP_DATA_ARG1_HI = 28;
export const SECCOMP_DATA_ARG2_LO = 32;

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

/**
 * ...and the TUN ioctls (uapi/linux/if_tun.h): type 'T', numbers 200
 * (TUNSETNOCSUM) to 227 (TUNGETDEVNETNS) and whatever is added after them.
 * With CAP_NET_ADMIN, TUNSETIFF on /dev/net/tun creates an interface and
 * TUNSETPERSIST keeps it after the helper is gone. Terminal ioctls share the
 * type byte (TCGETS is 0x5401) but use numbers below 0x70, so the test is
 * "type 'T' and number 0xc0-0xff", whatever the direction and size bits:
 * (request & mask) === value.
 */
export const TUN_IOCTLS = { mask: 0xffc0, value: 0x54c0 } as const;

/**
 * socket() protocols the helper may ask for: 0 (the default: TCP for
 * AF_INET/AF_INET6 stream sockets) or IPPROTO_TCP. Anything else is refused:
 * IPPROTO_MPTCP (262) and IPPROTO_SCTP (132) make stream sockets too, with
 * code paths and options the helper has no use for.
 */
export const SOCKET_PROTOCOLS = [0, 6 /* IPPROTO_TCP */] as const;

/** prctl() option PR_SET_DUMPABLE (uapi/linux/prctl.h): only with 0 */
export const PR_SET_DUMPABLE = 4;

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
  call("open_tree_attr", 467, 467),
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

/** socket(): allowed for SOCKET_DOMAINS, SOCK_STREAM and SOCKET_PROTOCOLS only */
export const SOCKET: Readonly<Record<Arch, number>> = { x86_64: 41, aarch64: 198 };

/** ioctl(): allowed, except the socket ioctls and the TUN ioctls */
export const IOCTL: Readonly<Record<Arch, number>> = { x86_64: 16, aarch64: 29 };

/** prctl(): allowed, except PR_SET_DUMPABLE with anything but 0 */
export const PRCTL: Readonly<Record<Arch, number>> = { x86_64: 157, aarch64: 167 };

/**
 * clone3() passes its flags in memory, where a filter cannot look, so it is
 * answered ENOSYS: glibc then falls back to clone(), whose flags are checked.
 */
export const CLONE3: Readonly<Record<Arch, number>> = { x86_64: 435, aarch64: 435 };

/** seccomp(2) itself, which glibc has no wrapper for */
export const SYS_SECCOMP: Readonly<Record<Arch, number>> = { x86_64: 317, aarch64: 277 };

/**
 * The newest system call this file was written against: file_setattr
 * (Linux 6.17), 469 on both architectures. Every number above it is answered
 * ENOSYS by the first stage: a call added to a later kernel was never judged
 * here, so it must not be allowed by default.
 */
export const NEWEST_CALL: Readonly<Record<Arch, number>> = { x86_64: 469, aarch64: 469 };

/**
 * The calls that serving passt makes over and over: per message one recvmsg
 * and one send, per descriptor one setsockopt and one close. Both stages
 * test them first, because the kernel runs the filters on every call.
 */
export const HOT_CALLS: Readonly<Record<Arch, Readonly<Record<string, number>>>> = {
  x86_64: { setsockopt: 54, close: 3, recvmsg: 47, sendto: 44 },
  aarch64: { setsockopt: 208, close: 57, recvmsg: 212, sendto: 206 },
};

const AUDIT_ARCH: Readonly<Record<Arch, number>> = {
  x86_64: AUDIT_ARCH_X86_64,
  aarch64: AUDIT_ARCH_AARCH64,
};

/** How a filter refuses: EPERM (the default) or killing the process */
export interface FilterOptions {
  /** SECCOMP_RET_KILL_PROCESS instead of EPERM (--seccomp-kill) */
  readonly kill?: boolean;
}

/** A built program, for one architecture */
export interface BuiltFilter {
  readonly arch: Arch;
  readonly auditArch: number;
  /** SYS_seccomp on this architecture */
  readonly seccompNr: number;
  /** struct sock_filter[], 8 bytes each: u16 code, u8 jt, u8 jf, u32 k */
  readonly program: Uint8Array;
  /** Number of instructions in the program */
  readonly length: number;
  /** Whether a refusal kills the process */
  readonly kill: boolean;
}

/** The first stage */
export interface SeccompFilter extends BuiltFilter {
  /** Names of the calls it refuses on this architecture */
  readonly refused: readonly string[];
}

// ---- a small assembler: instructions whose jumps name labels ----

interface Insn {
  code: number;
  k: number;
  /** Label to go to when true / false; absent: the next instruction */
  jt?: string;
  jf?: string;
}

type Item = Insn | { label: string };

function load(offset: number): Insn {
  return { code: BPF_LD | BPF_W | BPF_ABS, k: offset };
}

function and(k: number): Insn {
  return { code: BPF_ALU | BPF_AND | BPF_K, k };
}

function jump(op: number, k: number, jt?: string, jf?: string): Insn {
  return { code: BPF_JMP | op | BPF_K, k, ...(jt ? { jt } : {}), ...(jf ? { jf } : {}) };
}

function ret(k: number): Insn {
  return { code: BPF_RET | BPF_K, k };
}

function label(name: string): Item {
  return { label: name };
}

/** Resolves labels to forward offsets and encodes struct sock_filter[] */
function assemble(items: readonly Item[]): { program: Uint8Array; length: number } {
  const at = new Map<string, number>();
  const insns: Insn[] = [];
  for (const item of items) {
    if ("label" in item) at.set(item.label, insns.length);
    else insns.push(item);
  }
  const offset = (pc: number, target: string | undefined): number => {
    if (target === undefined) return 0;
    const to = at.get(target);
    if (to === undefined) throw new Error(`seccomp program: no label ${target}`);
    const off = to - pc - 1;
    if (off < 0 || off > 255) throw new Error(`seccomp program: jump to ${target} out of range`);
    return off;
  };
  const bytes = new Uint8Array(insns.length * 8);
  const view = new DataView(bytes.buffer);
  insns.forEach((insn, pc) => {
    view.setUint16(pc * 8, insn.code, true);
    view.setUint8(pc * 8 + 2, offset(pc, insn.jt));
    view.setUint8(pc * 8 + 3, offset(pc, insn.jf));
    view.setUint32(pc * 8 + 4, insn.k >>> 0, true);
  });
  return { program: bytes, length: insns.length };
}

const ALLOW = ret(SECCOMP_RET_ALLOW);
const ANSWER_EPERM = ret(SECCOMP_RET_ERRNO | EPERM);
const ANSWER_ENOSYS = ret(SECCOMP_RET_ERRNO | ENOSYS);

function refusal(options: FilterOptions): Insn {
  return options.kill ? ret(SECCOMP_RET_KILL_PROCESS) : ANSWER_EPERM;
}

/** The architectures the filter knows, as Deno.build.arch spells them */
export const SUPPORTED_ARCHES: readonly Arch[] = ["x86_64", "aarch64"];

function checkArch(arch: string, what: string): Arch {
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new RuntimeFailure(
      `Can't build the ${what}: unsupported architecture "${arch}" ` +
        `(system call numbers are known for ${SUPPORTED_ARCHES.join(" and ")} only)`,
    );
  }
  return arch;
}

/** Loads the number, after refusing every other ABI (and x32 on x86_64) */
function prologue(arch: Arch): Item[] {
  return [
    // Another ABI's numbers mean other calls: refuse them all
    load(SECCOMP_DATA_ARCH),
    jump(BPF_JEQ, AUDIT_ARCH[arch], undefined, "refuse"),
    load(SECCOMP_DATA_NR),
    // x32 calls: same audit arch, numbers with bit 30 set
    ...(arch === "x86_64" ? [jump(BPF_JGE, X32_SYSCALL_BIT, "refuse")] : []),
  ];
}

/**
 * Builds the first stage for `arch` (Deno.build.arch): the deny-list above.
 * An architecture it does not know fails closed: the numbers would mean other
 * calls there, so there is no filter to install and the helper must not run
 * unconfined.
 */
export function buildSeccompFilter(arch: string, options: FilterOptions = {}): SeccompFilter {
  const a = checkArch(arch, "seccomp filter");
  const refused = REFUSED_CALLS.filter((c) => c[a] !== null);
  const hot = HOT_CALLS[a];
  const [unix, inet, inet6] = SOCKET_DOMAINS;
  const [protoDefault, protoTcp] = SOCKET_PROTOCOLS;
  const items: Item[] = [
    ...prologue(a),
    // The calls serving makes, first: nothing below concerns them
    jump(BPF_JEQ, hot.setsockopt!, "allow"),
    jump(BPF_JEQ, hot.close!, "allow"),
    jump(BPF_JEQ, hot.recvmsg!, "allow"),
    jump(BPF_JEQ, hot.sendto!, "allow"),
    // Newer than this file: never judged, so not allowed
    jump(BPF_JGE, NEWEST_CALL[a] + 1, "enosys"),
    ...refused.map((c) => jump(BPF_JEQ, c[a]!, "refuse")),
    jump(BPF_JEQ, CLONE3[a], "enosys"),
    // Calls judged by their arguments. Each block loads arguments over the
    // number in the accumulator, so each ends in a verdict.
    jump(BPF_JEQ, CLONE[a], "clone"),
    jump(BPF_JEQ, SOCKET[a], "socket"),
    jump(BPF_JEQ, IOCTL[a], "ioctl"),
    jump(BPF_JEQ, PRCTL[a], "prctl", "allow"),
    // clone(flags, ...): no CLONE_NEW*
    label("clone"),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JSET, CLONE_NAMESPACE_FLAGS, "refuse", "allow"),
    // socket(domain, type, protocol): AF_UNIX, AF_INET or AF_INET6,
    // SOCK_STREAM, protocol 0 or IPPROTO_TCP
    label("socket"),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ, unix, "socket-type"),
    jump(BPF_JEQ, inet, "socket-type"),
    jump(BPF_JEQ, inet6, "socket-type", "refuse"),
    label("socket-type"),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JSET, SOCK_TYPE_MASK & ~1, "refuse"), // any type bit but bit 0: not SOCK_STREAM
    jump(BPF_JSET, 1, undefined, "refuse"),
    load(SECCOMP_DATA_ARG2_LO),
    jump(BPF_JEQ, protoDefault, "allow"),
    jump(BPF_JEQ, protoTcp, "allow", "refuse"),
    // ioctl(fd, request, ...): no socket ioctls, no TUN ioctls. The kernel
    // takes the request as an unsigned int: the low half is all there is.
    label("ioctl"),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JGE, SOCKET_IOCTLS.last + 1, "ioctl-tun"),
    jump(BPF_JGE, SOCKET_IOCTLS.first, "refuse"),
    label("ioctl-tun"),
    and(TUN_IOCTLS.mask),
    jump(BPF_JEQ, TUN_IOCTLS.value, "refuse", "allow"),
    // prctl(option, arg2, ...): PR_SET_DUMPABLE only with 0, in both halves
    // of the unsigned long (the kernel reads all of it)
    label("prctl"),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ, PR_SET_DUMPABLE, undefined, "allow"),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JEQ, 0, undefined, "refuse"),
    load(SECCOMP_DATA_ARG1_HI),
    jump(BPF_JEQ, 0, "allow", "refuse"),
    // Verdicts: classic BPF jumps only forward, so they come last
    label("allow"),
    ALLOW,
    label("enosys"),
    ANSWER_ENOSYS,
    label("refuse"),
    refusal(options),
  ];
  const { program, length } = assemble(items);
  return {
    arch: a,
    auditArch: AUDIT_ARCH[a],
    seccompNr: SYS_SECCOMP[a],
    program,
    length,
    refused: refused.map((c) => c.name),
    kill: options.kill === true,
  };
}

// ---- the second stage: once connected, an allow-list ----

/** A system call the second stage allows, and why serving needs it */
export interface AllowedCall {
  readonly name: string;
  readonly x86_64: number | null;
  readonly aarch64: number | null;
  readonly why: string;
}

function allowed(
  name: string,
  x86_64: number | null,
  aarch64: number | null,
  why: string,
): AllowedCall {
  return { name, x86_64, aarch64, why };
}

// Levels and options the second stage lets setsockopt() and getsockopt()
// reach (uapi/asm-generic/socket.h, uapi/linux/tcp.h)
const SOL_SOCKET = 1;
const SOL_TCP = 6;
const TCP_REPAIR = 19;
const SO_ATTACH_FILTER = 26;
const SO_DETACH_FILTER = 27;
const SO_ATTACH_BPF = 50;
const STDERR = 2;

/**
 * Every call the second stage allows, in the order the program tests them:
 * the hot calls first. The list comes from tracing the helper, every thread,
 * from its connect() to its exit, while it served the protocol, fuzz and
 * migration tests and long idle and busy sessions, with and without
 * --verbose, ending by EOF, reset, failure and SIGTERM: PASST_REPAIR_BIN set
 * to a script that runs `strace -D -f -o FILE deno run --allow-ffi main.ts
 * "$@"` (-D keeps the helper's PID, which the tests watch). Then the tests
 * and long fuzz campaigns run with --seccomp-kill, so that a call missing
 * here ends the helper with SIGSYS (two were found so: sched_getaffinity,
 * rseq). Calls marked "not seen" are there for the reason given.
 */
export const SERVING_CALLS: readonly AllowedCall[] = [
  // The protocol, in the order of their frequency
  allowed("setsockopt", 54, 208, "TCP_REPAIR on each descriptor; socket filters on passt's"),
  allowed("close", 3, 57, "our copy of each descriptor, after the reply"),
  allowed("recvmsg", 47, 212, "each command from passt, on passt's socket only"),
  allowed("sendto", 44, 206, "each reply to passt (send() is sendto()), on passt's socket only"),
  allowed(
    "close_range",
    436,
    436,
    "our copies of a message's descriptors at once, when their numbers run on; flags 0 only",
  ),
  allowed("getsockopt", 55, 209, "socket-level options (SO_COOKIE, SO_GET_FILTER) only"),
  allowed("write", 1, 64, "the one error line, and --verbose lines, on stderr only"),
  // Deno's threads: waiting, waking, memory
  allowed("futex", 202, 98, "every wait and wake-up between Deno's and V8's threads"),
  allowed("mmap", 9, 222, "V8's heap grows while collecting garbage"),
  allowed("munmap", 11, 215, "V8's heap shrinks; Rust's signal stack freed at exit"),
  allowed("madvise", 28, 233, "V8 marks heap pages; glibc frees an exiting thread's stack"),
  allowed("mprotect", 10, 226, "V8 commits heap and code pages; malloc grows an arena"),
  allowed("pkey_mprotect", 329, 288, "not seen: V8 protects code pages with memory keys"),
  allowed("brk", 12, 214, "malloc grows the main arena"),
  allowed("mremap", 25, 216, "not seen: realloc() of a large block"),
  allowed("sched_yield", 24, 124, "not seen: V8's spin locks yield"),
  allowed(
    "clock_nanosleep",
    230,
    115,
    "a one-time clock calibration (1 and 2 ms) when the TSC rate is unknown",
  ),
  allowed("nanosleep", 35, 101, "not seen: older glibc sleeps with it"),
  allowed("restart_syscall", 219, 128, "not seen: a timed wait resumed after a signal"),
  allowed("clock_gettime", 228, 113, "not seen: the vDSO falls back to it on some clocks"),
  allowed("gettimeofday", 96, 169, "not seen: the vDSO falls back to it on some clocks"),
  allowed("gettid", 186, 178, "V8 names the thread that posts a task"),
  allowed("getpid", 39, 172, "V8 when it starts a garbage collection"),
  allowed("sched_getparam", 143, 121, "V8 reads a thread's priority before running a job"),
  allowed("sched_getscheduler", 145, 120, "V8 reads a thread's priority before running a job"),
  allowed(
    "sched_getaffinity",
    204,
    123,
    "glibc's pthread_getattr_np, when V8 finds a worker's stack (refused: SIGSEGV)",
  ),
  allowed("getrandom", 318, 278, "not seen: Rust and V8 seed hash tables from it"),
  allowed("rt_sigprocmask", 14, 135, "glibc blocks signals around a thread's start and exit"),
  // A thread Deno created just before the second stage may first run after
  // it (seen once in about 300 fuzzed helpers under load: killed on rseq)
  allowed("rseq", 334, 293, "glibc registers a new thread's restartable sequences"),
  allowed("set_robust_list", 273, 99, "glibc registers a new thread's robust futex list"),
  allowed("rt_sigreturn", 15, 139, "not seen: the return from any signal handler"),
  allowed("sigaltstack", 131, 132, "Rust removes a thread's signal stack at its exit"),
  // Ending
  allowed("exit", 60, 93, "Deno's idle worker threads end after 10 s"),
  allowed("exit_group", 231, 94, "the helper's exit"),
];

/**
 * Calls the second stage refuses with EPERM even with --seccomp-kill: the
 * runtime tries them at times, and carries on when refused. They are refused
 * all the same (no file opens or lookups, no prctl() of any kind), only not by killing. After its first
 * garbage collections the runtime reads
 * /sys/devices/system/cpu/cpu0/tsc_freq_khz once (and calibrates by sleeping
 * when it cannot) and /proc/sys/vm/overcommit_memory (and assumes a default
 * when it cannot); killing the helper for either would end a migration for
 * nothing.
 */
export const SERVING_SOFT_REFUSALS: readonly AllowedCall[] = [
  allowed(
    "openat",
    257,
    56,
    "one-time reads of the TSC frequency and of vm.overcommit_memory, both optional",
  ),
  allowed("open", 2, null, "the same, through an older glibc"),
  allowed(
    "prctl",
    157,
    167,
    "a thread starting late names itself (PR_SET_NAME) and carries on if refused",
  ),
  // Deno opens its caches (SQLite files in DENO_DIR) on threads of its own as
  // it starts; on a loaded machine one can still be at it when the second
  // stage comes, and SQLite looks its file up before opening it, then deletes
  // one it cannot open. Refused, Deno carries on without that cache.
  allowed("lstat", 6, null, "a late cache thread: SQLite resolves its file's path"),
  allowed("stat", 4, null, "the same"),
  allowed("newfstatat", 262, null, "the same, through a newer glibc"),
  allowed("fstatat", null, 79, "the same on aarch64, where its header calls newfstatat this"),
  allowed("statx", 332, 291, "the same, through a newer glibc"),
  allowed("unlink", 87, null, "a late cache thread deletes a cache it could not open"),
  allowed("unlinkat", 263, 35, "the same, on aarch64"),
];

/** The descriptor the second stage's recvmsg() and sendto() are limited to */
export const NO_PEER = 0xffffffff;

/** The second stage: an allow-list, with passt's descriptor still to be set */
export interface ServingFilter extends BuiltFilter {
  /** Names of the calls it allows on this architecture, the rest being refused */
  readonly allowed: readonly string[];
  /** Instructions whose k is passt's descriptor (NO_PEER until bound) */
  readonly peerSlots: readonly number[];
}

/**
 * Builds the second stage for `arch`. recvmsg() and sendto() are allowed on
 * one descriptor only, passt's, which is not known yet: bindPeer() writes it
 * into the program once connected. Until then they are refused.
 */
export function buildServingFilter(arch: string, options: FilterOptions = {}): ServingFilter {
  const a = checkArch(arch, "second seccomp filter");
  const calls = SERVING_CALLS.filter((c) => c[a] !== null);
  const special: Readonly<Record<string, string>> = {
    setsockopt: "setsockopt",
    recvmsg: "peer",
    sendto: "peer",
    getsockopt: "getsockopt",
    write: "write",
    close_range: "close-range",
  };
  const soft = SERVING_SOFT_REFUSALS.filter((c) => c[a] !== null);
  const items: Item[] = [
    load(SECCOMP_DATA_ARCH),
    jump(BPF_JEQ, AUDIT_ARCH[a], undefined, "refuse"),
    load(SECCOMP_DATA_NR),
    // x32 numbers carry bit 30 and so equal none below: no test needed
    ...calls.map((c) => jump(BPF_JEQ, c[a]!, special[c.name] ?? "allow")),
    ...soft.map((c) => jump(BPF_JEQ, c[a]!, "eperm")),
    // Anything else
    refusal(options),
    // setsockopt(fd, level, name, ...): TCP_REPAIR, or a socket filter
    label("setsockopt"),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JEQ, SOL_TCP, undefined, "setsockopt-socket"),
    load(SECCOMP_DATA_ARG2_LO),
    jump(BPF_JEQ, TCP_REPAIR, "allow", "refuse"),
    label("setsockopt-socket"),
    jump(BPF_JEQ, SOL_SOCKET, undefined, "refuse"),
    load(SECCOMP_DATA_ARG2_LO),
    jump(BPF_JEQ, SO_ATTACH_FILTER, "allow"),
    jump(BPF_JEQ, SO_DETACH_FILTER, "allow"),
    jump(BPF_JEQ, SO_ATTACH_BPF, "allow", "refuse"),
    // recvmsg(fd, ...), sendto(fd, ...): passt's socket only
    label("peer"),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ, NO_PEER, "allow", "refuse"), // k: the peer slot
    // getsockopt(fd, level, ...): socket-level options only
    label("getsockopt"),
    load(SECCOMP_DATA_ARG1_LO),
    jump(BPF_JEQ, SOL_SOCKET, "allow", "refuse"),
    // write(fd, ...): stderr only
    label("write"),
    load(SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ, STDERR, "allow", "refuse"),
    // close_range(first, last, flags): flags 0, nothing but closing (no
    // CLOSE_RANGE_UNSHARE, no CLOSE_RANGE_CLOEXEC). The kernel takes the
    // flags as an unsigned int: the low half is all there is.
    label("close-range"),
    load(SECCOMP_DATA_ARG2_LO),
    jump(BPF_JEQ, 0, "allow", "refuse"),
    // Verdicts: classic BPF jumps only forward, so they come last
    label("allow"),
    ALLOW,
    label("eperm"),
    ANSWER_EPERM,
    label("refuse"),
    refusal(options),
  ];
  const { program, length } = assemble(items);
  // The peer slot: the jump right after the "peer" label's load
  let pc = 0;
  let peerSlot = -1;
  for (const item of items) {
    if ("label" in item) {
      if (item.label === "peer") peerSlot = pc + 1;
    } else pc++;
  }
  return {
    arch: a,
    auditArch: AUDIT_ARCH[a],
    seccompNr: SYS_SECCOMP[a],
    program,
    length,
    allowed: calls.map((c) => c.name),
    kill: options.kill === true,
    peerSlots: [peerSlot],
  };
}

/** Writes passt's descriptor into the second stage, in place */
export function bindPeer(filter: ServingFilter, fd: number): void {
  const view = new DataView(filter.program.buffer, filter.program.byteOffset);
  for (const slot of filter.peerSlots) view.setUint32(slot * 8 + 4, fd >>> 0, true);
}
