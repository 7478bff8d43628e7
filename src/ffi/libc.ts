// The complete native surface of passt-repair.
//
// This is the only file that calls Deno.dlopen or touches Deno.UnsafePointer*.
// The SYMBOLS table below is every C function the program can call, the way
// upstream's seccomp allow-list is every system call it can make: to review
// what the helper can do outside Deno's sandbox, review this table.
//
// libc is opened by openLibc(), never at import time, so modules that import
// this one can be unit-tested without --allow-ffi. Wrappers return the result,
// or -errno on failure; errno is read in the same expression, right after the
// synchronous call, because any other JS or Deno call in between may clobber it
// (which the few calls openLibc("connect") makes through libffi allow: their
// one user treats every failure alike).
// Buffers are passed as "buffer" (a Uint8Array), never as raw pointers, except
// inside structs (msghdr, iovec, sock_fprog, bpf_attr), whose addresses are
// computed once before the ffi permission is revoked.

import {
  AF_UNIX,
  type Arch,
  AT_EMPTY_PATH,
  BPF_ATTR_INSN_CNT,
  BPF_ATTR_INSNS,
  BPF_ATTR_LICENSE,
  BPF_ATTR_PROG_LOAD_SIZE,
  BPF_ATTR_PROG_NAME,
  BPF_ATTR_PROG_TYPE,
  BPF_INSN_SIZE,
  BPF_OBJ_NAME_LEN,
  BPF_PROG_LOAD,
  BPF_PROG_TYPE_SOCKET_FILTER,
  CLONE_FILES,
  CMSG_HDR_SIZE,
  CMSG_LEN_OFF,
  CMSG_LEVEL_OFF,
  CMSG_TYPE_OFF,
  cmsgLen,
  cmsgSpace,
  CONTROL_SIZE,
  IOV_BASE,
  IOV_LEN,
  IOVEC_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_FLAGS,
  MSG_IOV,
  MSG_IOVLEN,
  MSG_NAME,
  MSG_NAMELEN,
  MSG_NOSIGNAL,
  MSGHDR_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SO_ATTACH_BPF,
  SO_ATTACH_FILTER,
  SO_COOKIE,
  SO_DETACH_FILTER,
  SO_GET_FILTER,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  SOCK_STREAM,
  SOL_SOCKET,
  SOL_TCP,
  STATX_BTIME,
  STATX_INO,
  STATX_MODE,
  STATX_NLINK,
  STATX_SIZE,
  STATX_TYPE,
  STATX_UID,
  STX_BTIME,
  STX_DEV_MAJOR,
  STX_DEV_MINOR,
  STX_INO,
  STX_MASK,
  STX_MODE,
  STX_NLINK,
  STX_UID,
  SYS_BPF,
  TCP_REPAIR,
  UCRED_GID,
  UCRED_PID,
  UCRED_SIZE,
  UCRED_UID,
} from "../abi.ts";
import {
  CLASSIC_DROP_FILTER,
  EBPF_DROP_PROGRAM,
  EBPF_PROGRAM_NAME,
  type HoldKind,
} from "../hold.ts";
import { EIO, ENOSYS } from "../errors.ts";
import type { PrimingPeer, RepairNative } from "../repair.ts";

// Types named after C, so that each row reads like its prototype
const int = "i32";
const uint = "u32";
const size_t = "usize";
const buffer = "buffer";
// ssize_t results are declared as int: we never move more than one byte or a
// few KiB at once, and a 64-bit result would come back as a BigInt (an
// allocation per call on the hot path). On x86_64 and aarch64 the low half of
// the return register holds the same value.
const ssize_t_small = "i32";

const SYMBOLS = {
  // int socket(int domain, int type, int protocol)
  socket: { parameters: [int, int, int], result: int },
  // int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen)
  connect: { parameters: [int, buffer, uint], result: int },
  // ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags)
  recvmsg: { parameters: [int, buffer, int], result: ssize_t_small },
  // ssize_t send(int sockfd, const void *buf, size_t len, int flags)
  send: { parameters: [int, buffer, size_t, int], result: ssize_t_small },
  // int socketpair(int domain, int type, int protocol, int sv[2]): only at
  // startup, for the socket pair over which the helper primes itself
  socketpair: { parameters: [int, int, int, buffer], result: int },
  // ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags): only at
  // startup, to send the helper's own throwaway socket to itself (SelfPeer)
  sendmsg: { parameters: [int, buffer, int], result: ssize_t_small },
  // int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
  setsockopt: { parameters: [int, int, int, buffer, uint], result: int },
  // int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
  getsockopt: { parameters: [int, int, int, buffer, buffer], result: int },
  // int close(int fd)
  close: { parameters: [int], result: int },
  // int close_range(unsigned int first, unsigned int last, int flags): our
  // copies of a message's descriptors in one call when their numbers run on
  // (Linux 5.9, glibc 2.34). Optional: null where libc lacks it, and then
  // each is closed on its own, as where the kernel lacks it (ENOSYS).
  close_range: { parameters: [uint, uint, int], result: int, optional: true },
  // int unshare(int flags): only CLONE_FILES, once, before hardening, so
  // that the serving thread has a descriptor table of its own
  unshare: { parameters: [int], result: int },
  // int fcntl(int fd, int cmd, int arg): F_DUPFD_CLOEXEC, and F_SETFL to make
  // the connection to passt blocking once connected
  fcntl: { parameters: [int, int, int], result: int },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask,
  //           struct statx *buf)
  statx: { parameters: [int, buffer, int, uint, buffer], result: int },
  // int openat(int dirfd, const char *path, int flags, mode_t mode)
  openat: { parameters: [int, buffer, int, uint], result: int },
  // ssize_t getdents64(int fd, void *dirp, size_t count)
  getdents64: { parameters: [int, buffer, size_t], result: ssize_t_small },
  // int inotify_init1(int flags)
  inotify_init1: { parameters: [int], result: int },
  // int inotify_add_watch(int fd, const char *path, uint32_t mask)
  inotify_add_watch: { parameters: [int, buffer, uint], result: int },
  // ssize_t read(int fd, void *buf, size_t count)
  read: { parameters: [int, buffer, size_t], result: ssize_t_small },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout)
  poll: { parameters: [buffer, "u64", int], result: int },
  // int prctl(int option, unsigned long arg2, unsigned long arg3,
  //           unsigned long arg4, unsigned long arg5)
  prctl: { parameters: [int, "u64", "u64", "u64", "u64"], result: int },
  // long syscall(long number, ...): only for seccomp(2), which glibc lacks;
  // called as syscall(SYS_seccomp, unsigned op, unsigned flags, void *args)
  syscall: { parameters: ["i64", "u64", "u64", buffer], result: "i64" },
  // long syscall(long number, ...): only for bpf(2), which glibc lacks, and
  // only once, at startup, to load the input hold's program; called as
  // syscall(SYS_bpf, int cmd, union bpf_attr *attr, unsigned int size)
  syscall_bpf: { name: "syscall", parameters: ["i64", "i64", buffer, "u64"], result: "i64" },
  // int *__errno_location(void): the calling thread's errno
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/**
 * What socket mode needs to connect and check its peer, before the rest is
 * bound (src/startup.ts, step 1)
 */
const CONNECT_SYMBOLS = [
  "statx",
  "openat",
  "socket",
  "connect",
  "fcntl",
  "getsockopt",
  "close",
  "__errno_location",
] as const satisfies readonly (keyof typeof SYMBOLS)[];

let libc: Symbols | null = null;
/** Only CONNECT_SYMBOLS are callable, and through libffi */
let connectOnly = false;
// The main thread's errno, seen through a typed array made once, so reading it
// needs neither an allocation nor the ffi permission (revoked after startup).
let errnoCell = new Int32Array(1);

/**
 * Opens libc and binds SYMBOLS. Needs --allow-ffi; idempotent.
 *
 * With `only: "connect"`, just CONNECT_SYMBOLS, called through libffi from
 * their addresses (Deno.UnsafeFnPointer): binding a symbol the usual way
 * compiles its call stubs (about 1 ms for the first, 0.2 ms each after),
 * which the few calls of connecting do not need. errno after such a call
 * is not to be trusted (Deno's own code runs between the call and the
 * read): the one try at connecting treats every failure alike. A later
 * call without `only` binds all of SYMBOLS the usual way.
 */
export function openLibc(only?: "connect"): void {
  if (libc !== null && (!connectOnly || only === "connect")) return;
  if (only === "connect") {
    const addresses = Object.fromEntries(
      CONNECT_SYMBOLS.map((n) => [n, { type: "pointer" } as const]),
    ) as Record<(typeof CONNECT_SYMBOLS)[number], { type: "pointer" }>;
    const found = Deno.dlopen("libc.so.6", addresses).symbols;
    const calls = Object.fromEntries(CONNECT_SYMBOLS.map((n) => {
      const address = found[n];
      if (address === null) throw new Error(`libc has no ${n}`);
      const fn = new Deno.UnsafeFnPointer<Deno.ForeignFunction>(
        address as Deno.PointerObject<Deno.ForeignFunction>,
        SYMBOLS[n],
      );
      return [n, fn.call.bind(fn)];
    }));
    bind(calls as unknown as Symbols);
    connectOnly = true;
    return;
  }
  bind(Deno.dlopen("libc.so.6", SYMBOLS).symbols);
  connectOnly = false;
}

function bind(symbols: Symbols): void {
  const where = symbols.__errno_location();
  if (where === null) throw new Error("__errno_location() returned NULL");
  errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(where, 4));
  libc = symbols;
}

function sym(): Symbols {
  if (libc === null) throw new Error("libc is not open: call openLibc() first");
  return libc;
}

/** -errno for a failed call: only call it right after the failing call */
function fail(): number {
  return failure(errnoCell[0]!);
}

/**
 * -errno for a call that failed with `errno`, never 0: an errno of 0 (only
 * possible if it was clobbered between the call and the read, which the
 * calls bound by openLibc("connect") allow) would give -0, which passes
 * `r === 0` and `fd >= 0`: a refused connect() would read as connected. EIO
 * stands in for it.
 */
export function failure(errno: number): number {
  return errno === 0 ? -EIO : -errno;
}

/** NUL-terminated copy of a path, as C wants it */
function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

/** socket(): descriptor or -errno */
export function socket(domain: number, type: number, protocol = 0): number {
  const r = sym().socket(domain, type, protocol);
  return r < 0 ? fail() : r;
}

/** connect() with a prepared sockaddr of `length` bytes: 0 or -errno */
export function connect(fd: number, address: Uint8Array, length: number): number {
  const r = sym().connect(fd, address, length);
  return r < 0 ? fail() : r;
}

/** close(): 0 or -errno */
export function close(fd: number): number {
  const r = sym().close(fd);
  return r < 0 ? fail() : r;
}

/**
 * close_range(first, last, 0): 0, or -errno when it closed nothing; -ENOSYS
 * where libc (before 2.34) or the kernel (before 5.9) lacks it
 */
export function closeRange(first: number, last: number): number {
  const call = sym().close_range;
  if (call === null) return -ENOSYS;
  const r = call(first, last, 0);
  return r < 0 ? fail() : r;
}

const F_DUPFD_CLOEXEC = 1030;

/**
 * unshare(CLONE_FILES): this thread gets a descriptor table of its own, a
 * copy of the process's; 0 or -errno
 */
export function unshareFiles(): number {
  const r = sym().unshare(CLONE_FILES);
  return r < 0 ? fail() : r;
}

/** fcntl(F_DUPFD_CLOEXEC): a copy on the lowest free descriptor >= min, or -errno */
export function dupAtLeast(fd: number, min: number): number {
  const r = sym().fcntl(fd, F_DUPFD_CLOEXEC, min);
  return r < 0 ? fail() : r;
}

const intOption = new Int32Array(1);
const intOptionBytes = new Uint8Array(intOption.buffer);
const optionLength = new Uint32Array(1);
const optionLengthBytes = new Uint8Array(optionLength.buffer);

/** setsockopt() of an int option: 0 or -errno */
export function setIntOption(
  fd: number,
  level: number,
  name: number,
  value: number,
): number {
  intOption[0] = value;
  const r = sym().setsockopt(fd, level, name, intOptionBytes, 4);
  return r < 0 ? fail() : r;
}

/** setsockopt(fd, SOL_TCP, TCP_REPAIR, &op, 4): 0 or -errno */
export function setTcpRepair(fd: number, op: number): number {
  return setIntOption(fd, SOL_TCP, TCP_REPAIR, op);
}

/** Peer credentials of a connected UNIX socket (SO_PEERCRED) */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED: the credentials, or -errno */
export function peerCredentials(fd: number): PeerCredentials | number {
  const cred = new Uint8Array(UCRED_SIZE);
  const len = new Uint32Array([UCRED_SIZE]);
  const r = sym().getsockopt(
    fd,
    SOL_SOCKET,
    SO_PEERCRED,
    cred,
    new Uint8Array(len.buffer),
  );
  if (r < 0) return fail();
  const view = new DataView(cred.buffer);
  return {
    pid: view.getInt32(UCRED_PID, true),
    uid: view.getUint32(UCRED_UID, true),
    gid: view.getUint32(UCRED_GID, true),
  };
}

/** What statx() says about a file: its type and mode, owner, links and identity */
export interface FileStatus {
  readonly mode: number;
  /** The owner's uid */
  readonly uid: number;
  /** Hard links to it */
  readonly nlink: number;
  /**
   * "major:minor:inode[:birth]", equal for two names of the same file; the
   * birth time, where the filesystem keeps one, tells a new file that got a
   * deleted one's inode number from the old one
   */
  readonly identity: string;
}

const statxBuffer = new Uint8Array(STATX_SIZE);
const statxView = new DataView(statxBuffer.buffer);
const EMPTY_PATH = new Uint8Array(1);

/**
 * statx() of `path` (NUL-terminated) relative to `dirfd` (AT_FDCWD for the
 * working directory), or of `dirfd` itself when `path` is null (AT_EMPTY_PATH):
 * the status, or -errno. `flags` may hold AT_SYMLINK_NOFOLLOW.
 */
export function statx(dirfd: number, path: Uint8Array | null, flags: number): FileStatus | number {
  const r = sym().statx(
    dirfd,
    path ?? EMPTY_PATH,
    path === null ? flags | AT_EMPTY_PATH : flags,
    STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_UID | STATX_INO | STATX_BTIME,
    statxBuffer,
  );
  if (r < 0) return fail();
  const v = statxView;
  const birth = (v.getUint32(STX_MASK, true) & STATX_BTIME) === 0
    ? ""
    : `:${v.getBigInt64(STX_BTIME, true)}.${v.getUint32(STX_BTIME + 8, true)}`;
  return {
    mode: v.getUint16(STX_MODE, true),
    uid: v.getUint32(STX_UID, true),
    nlink: v.getUint32(STX_NLINK, true),
    identity: `${v.getUint32(STX_DEV_MAJOR, true)}:${v.getUint32(STX_DEV_MINOR, true)}:${
      v.getBigUint64(STX_INO, true)
    }${birth}`,
  };
}

/** openat() of `path` (NUL-terminated): descriptor or -errno */
export function openAt(dirfd: number, path: Uint8Array, flags: number): number {
  const r = sym().openat(dirfd, path, flags, 0);
  return r < 0 ? fail() : r;
}

const F_SETFL = 4;

/** fcntl(F_SETFL, 0): clears O_NONBLOCK; 0 or -errno */
export function makeBlocking(fd: number): number {
  const r = sym().fcntl(fd, F_SETFL, 0);
  return r < 0 ? fail() : r;
}

/** getdents64() into `buf`: bytes filled, 0 at the end, or -errno */
export function getdents64(fd: number, buf: Uint8Array): number {
  const r = sym().getdents64(fd, buf, BigInt(buf.byteLength));
  return r < 0 ? fail() : r;
}

/** inotify_init1(): descriptor or -errno */
export function inotifyInit(flags: number): number {
  const r = sym().inotify_init1(flags);
  return r < 0 ? fail() : r;
}

/** inotify_add_watch() of `path` (NUL-terminated): watch descriptor or -errno */
export function inotifyAddWatch(fd: number, path: Uint8Array, mask: number): number {
  const r = sym().inotify_add_watch(fd, path, mask);
  return r < 0 ? fail() : r;
}

/** read() into `buf`: bytes read, 0 at EOF, or -errno */
export function read(fd: number, buf: Uint8Array): number {
  const r = sym().read(fd, buf, BigInt(buf.byteLength));
  return r < 0 ? fail() : r;
}

/**
 * poll() on the pollfd array in `fds` (8 bytes each): the number of ready
 * descriptors, 0 on timeout, or -errno. A negative timeout waits forever.
 */
export function poll(fds: Uint8Array, count: number, timeoutMs: number): number {
  const r = sym().poll(fds, BigInt(count), timeoutMs);
  return r < 0 ? fail() : r;
}

/** prctl(): result or -errno */
export function prctl(option: number, arg2 = 0n, arg3 = 0n, arg4 = 0n, arg5 = 0n): number {
  const r = sym().prctl(option, arg2, arg3, arg4, arg5);
  return r < 0 ? fail() : r;
}

/**
 * struct sock_fprog for a BPF program given as its sock_filter array: the
 * instruction count and the program's address. Taking the address needs the
 * ffi permission, so a filter installed after the revoke is prepared before
 * it; both buffers must then be kept alive (and the program may still be
 * changed in place: the address stays).
 */
export function sockFprog(filter: Uint8Array): Uint8Array {
  const prog = new Uint8Array(SOCK_FPROG_SIZE);
  const view = new DataView(prog.buffer);
  view.setUint16(0, filter.byteLength / SOCK_FILTER_SIZE, true);
  view.setBigUint64(8, addressOf(filter), true);
  return prog;
}

/**
 * seccomp(operation, flags, prog) with a struct sock_fprog made by
 * sockFprog(): 0, a thread id (TSYNC's failure) or -errno. Needs no
 * permission. `nr` is the architecture's SYS_seccomp.
 */
export function seccompInstall(
  nr: number,
  operation: number,
  flags: number,
  prog: Uint8Array,
): number {
  const r = sym().syscall(BigInt(nr), BigInt(operation), BigInt(flags), prog);
  return r < 0n ? fail() : Number(r);
}

/**
 * seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) for a BPF program given as
 * its sock_filter array: 0 or -errno. `nr` is the architecture's SYS_seccomp.
 */
export function seccompSetModeFilter(
  nr: number,
  operation: number,
  flags: number,
  filter: Uint8Array,
): number {
  return seccompInstall(nr, operation, flags, sockFprog(filter));
}

/**
 * bpf(BPF_PROG_LOAD) of a socket filter program given as its bpf_insn
 * array: the program's descriptor (close-on-exec, as the kernel makes every
 * BPF descriptor), or -errno. Needs the ffi permission (the attribute holds
 * the program's address) and a process that may load BPF programs: root or
 * CAP_BPF, or anyone where unprivileged BPF is enabled.
 */
export function loadSocketFilter(
  program: Uint8Array,
  name: string,
  arch: Arch,
): number {
  const license = cString("GPL");
  const attr = new Uint8Array(BPF_ATTR_PROG_LOAD_SIZE);
  const view = new DataView(attr.buffer);
  view.setUint32(BPF_ATTR_PROG_TYPE, BPF_PROG_TYPE_SOCKET_FILTER, true);
  view.setUint32(BPF_ATTR_INSN_CNT, program.byteLength / BPF_INSN_SIZE, true);
  view.setBigUint64(BPF_ATTR_INSNS, addressOf(program), true);
  view.setBigUint64(BPF_ATTR_LICENSE, addressOf(license), true);
  attr.set(new TextEncoder().encode(name).subarray(0, BPF_OBJ_NAME_LEN - 1), BPF_ATTR_PROG_NAME);
  const r = sym().syscall_bpf(
    BigInt(SYS_BPF[arch]),
    BigInt(BPF_PROG_LOAD),
    attr,
    BigInt(attr.byteLength),
  );
  // The kernel copied the program and the license: they may go now
  void [program, license];
  return r < 0n ? fail() : Number(r);
}

/**
 * The filter the input hold attaches to a socket in repair mode (src/hold.ts):
 * one eBPF program loaded now and attached by descriptor where this process
 * may load one, else a classic filter, compiled by the kernel at each attach.
 * Prepare it before the seccomp filter (which refuses bpf) and before the
 * ffi permission is revoked (the classic sock_fprog holds an address).
 */
export class DropFilter {
  readonly kind: HoldKind;
  /** The eBPF program's descriptor, or -1 */
  readonly program: number;
  /** Why no eBPF program could be loaded (errno), or 0 */
  readonly refusal: number;
  readonly #programFd = new Int32Array(1);
  readonly #programFdBytes = new Uint8Array(this.#programFd.buffer);
  readonly #classic = CLASSIC_DROP_FILTER.slice();
  readonly #fprog = new Uint8Array(SOCK_FPROG_SIZE);

  constructor(arch: Arch) {
    const fd = loadSocketFilter(EBPF_DROP_PROGRAM, EBPF_PROGRAM_NAME, arch);
    this.kind = fd >= 0 ? "ebpf" : "classic";
    this.program = fd >= 0 ? fd : -1;
    this.refusal = fd >= 0 ? 0 : -fd;
    this.#programFd[0] = this.program;
    const view = new DataView(this.#fprog.buffer);
    view.setUint16(0, this.#classic.byteLength / SOCK_FILTER_SIZE, true);
    view.setBigUint64(8, addressOf(this.#classic), true);
  }

  /** SO_ATTACH_BPF of the program, or SO_ATTACH_FILTER of the classic filter: 0 or -errno */
  attach(fd: number): number {
    const r = this.kind === "ebpf"
      ? sym().setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, this.#programFdBytes, 4)
      : sym().setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, this.#fprog, SOCK_FPROG_SIZE);
    return r < 0 ? fail() : r;
  }
}

/** SO_DETACH_FILTER (SO_DETACH_BPF is the same): 0 or -errno */
export function detachFilter(fd: number): number {
  return setIntOption(fd, SOL_SOCKET, SO_DETACH_FILTER, 0);
}

/**
 * getsockopt(SO_GET_FILTER) with optlen 0, which asks only for the size: the
 * instructions of the socket's classic filter, 0 if it has none, or -errno
 * (-EACCES for an eBPF program, which has no classic form to report)
 */
export function filterLength(fd: number): number {
  optionLength[0] = 0;
  const r = sym().getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, intOptionBytes, optionLengthBytes);
  return r < 0 ? fail() : optionLength[0]!;
}

const cookie = new Uint32Array(2);
const cookieBytes = new Uint8Array(cookie.buffer);
const EOVERFLOW = 75;

/**
 * getsockopt(SO_COOKIE): the socket's cookie as a number, or -errno. Cookies
 * count up from 1 per boot; one at 2^53 or more (never seen: it takes that
 * many sockets) cannot be held exactly in a number and is refused with
 * EOVERFLOW rather than confused with another.
 */
export function socketCookie(fd: number): number {
  optionLength[0] = 8;
  const r = sym().getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookieBytes, optionLengthBytes);
  if (r < 0) return fail();
  const high = cookie[1]!;
  if (high >= 0x200000) return -EOVERFLOW;
  return high * 4294967296 + cookie[0]!;
}

const MSGHDR_IOVLEN = 1n;
const MSGHDR_CONTROLLEN = BigInt(CONTROL_SIZE);

/**
 * One connection to passt, with every buffer recvmsg() and send() use made
 * once: the msghdr, its iovec, the 1-byte data buffer, the control buffer and
 * the reply byte. Construct it before the ffi permission is revoked (it takes
 * buffer addresses); attach() the connected descriptor later. `filter` is the
 * input hold's, or null when the hold is off.
 */
export class Channel implements RepairNative {
  readonly data = new Uint8Array(1);
  readonly control: DataView;
  #fd = -1;
  readonly #controlBytes = new Uint8Array(CONTROL_SIZE);
  readonly #msg = new Uint8Array(MSGHDR_SIZE);
  readonly #msgView = new DataView(this.#msg.buffer);
  readonly #iov = new Uint8Array(IOVEC_SIZE);
  readonly #iovView = new DataView(this.#iov.buffer);
  readonly #reply = new Uint8Array(1);
  readonly #dataAddress: bigint;
  readonly #iovAddress: bigint;
  readonly #controlAddress: bigint;
  readonly #filter: DropFilter | null;

  constructor(filter: DropFilter | null = null) {
    this.#filter = filter;
    this.control = new DataView(this.#controlBytes.buffer);
    this.#dataAddress = addressOf(this.data);
    this.#iovAddress = addressOf(this.#iov);
    this.#controlAddress = addressOf(this.#controlBytes);
  }

  /** The connected socket to passt */
  attach(fd: number): void {
    this.#fd = fd;
  }

  get fd(): number {
    return this.#fd;
  }

  receive(): number {
    // The kernel overwrites msg_controllen and msg_flags (and may touch the
    // rest): rebuild the whole msghdr before every call, or the next message's
    // descriptors are silently cut to the previous message's count.
    const m = this.#msgView;
    m.setBigUint64(MSG_NAME, 0n, true);
    m.setUint32(MSG_NAMELEN, 0, true);
    m.setBigUint64(MSG_IOV, this.#iovAddress, true);
    m.setBigUint64(MSG_IOVLEN, MSGHDR_IOVLEN, true);
    m.setBigUint64(MSG_CONTROL, this.#controlAddress, true);
    m.setBigUint64(MSG_CONTROLLEN, MSGHDR_CONTROLLEN, true);
    m.setInt32(MSG_FLAGS, 0, true);
    this.#iovView.setBigUint64(IOV_BASE, this.#dataAddress, true);
    this.#iovView.setBigUint64(IOV_LEN, 1n, true);
    const r = sym().recvmsg(this.#fd, this.#msg, MSG_CMSG_CLOEXEC);
    return r < 0 ? fail() : r;
  }

  controlLength(): number {
    // Low half of the size_t: the kernel never reports more than CONTROL_SIZE,
    // and reading it as a BigInt would allocate on every message
    return this.#msgView.getUint32(MSG_CONTROLLEN, true);
  }

  messageFlags(): number {
    return this.#msgView.getInt32(MSG_FLAGS, true);
  }

  setTcpRepair(fd: number, op: number): number {
    return setTcpRepair(fd, op);
  }

  reply(byte: number): number {
    this.#reply[0] = byte;
    // MSG_NOSIGNAL: if passt is gone, report it instead of dying of SIGPIPE
    const r = sym().send(this.#fd, this.#reply, 1n, MSG_NOSIGNAL);
    return r < 0 ? fail() : r;
  }

  close(fd: number): void {
    sym().close(fd);
  }

  closeRange(first: number, last: number): number {
    return closeRange(first, last);
  }

  get holdKind(): HoldKind {
    return this.#filter?.kind ?? "classic";
  }

  filterLength(fd: number): number {
    return filterLength(fd);
  }

  socketCookie(fd: number): number {
    return socketCookie(fd);
  }

  attachHold(fd: number): number {
    return this.#filter === null ? -EINVAL : this.#filter.attach(fd);
  }

  detachHold(fd: number): number {
    return detachFilter(fd);
  }
}

const EINVAL = 22;
/**
 * passt's end of a socket pair of the helper's own, for priming: it sends
 * the helper's throwaway TCP socket to the helper's Channel in real
 * SCM_RIGHTS messages and reads the replies, so that the first real message
 * finds every call on its path already made once (RepairSession.prime()).
 * Like the Channel, construct it before the ffi permission is revoked.
 */
export class SelfPeer implements PrimingPeer {
  readonly #data = new Uint8Array(1);
  readonly #reply = new Uint8Array(1);
  readonly #control = new Uint8Array(cmsgSpace(SCM_MAX_FD * 4));
  readonly #controlView = new DataView(this.#control.buffer);
  readonly #msg = new Uint8Array(MSGHDR_SIZE);
  readonly #msgView = new DataView(this.#msg.buffer);
  readonly #iov = new Uint8Array(IOVEC_SIZE);
  readonly #pair = new Int32Array(2);
  #fd = -1;

  constructor() {
    const iov = new DataView(this.#iov.buffer);
    iov.setBigUint64(IOV_BASE, addressOf(this.#data), true);
    iov.setBigUint64(IOV_LEN, 1n, true);
    const m = this.#msgView;
    m.setBigUint64(MSG_IOV, addressOf(this.#iov), true);
    m.setBigUint64(MSG_IOVLEN, 1n, true);
    m.setBigUint64(MSG_CONTROL, addressOf(this.#control), true);
  }

  /**
   * Makes the socket pair and loads `spare` as every descriptor a message
   * will carry: the helper's end (to attach to the Channel), or -errno
   */
  open(spare: number): number {
    const r = sym().socketpair(
      AF_UNIX,
      SOCK_STREAM | SOCK_CLOEXEC,
      0,
      new Uint8Array(this.#pair.buffer),
    );
    if (r < 0) return fail();
    this.#fd = this.#pair[0]!;
    const c = this.#controlView;
    c.setInt32(CMSG_LEVEL_OFF, SOL_SOCKET, true);
    c.setInt32(CMSG_TYPE_OFF, SCM_RIGHTS, true);
    for (let i = 0; i < SCM_MAX_FD; i++) c.setInt32(CMSG_HDR_SIZE + 4 * i, spare, true);
    return this.#pair[1]!;
  }

  send(byte: number, count: number): number {
    this.#data[0] = byte;
    // size_t fields written as two 32-bit halves: a BigInt would allocate,
    // and priming should leave the heap as it found it
    this.#controlView.setUint32(CMSG_LEN_OFF, cmsgLen(4 * count), true);
    this.#controlView.setUint32(CMSG_LEN_OFF + 4, 0, true);
    this.#msgView.setUint32(MSG_CONTROLLEN, cmsgSpace(4 * count), true);
    this.#msgView.setUint32(MSG_CONTROLLEN + 4, 0, true);
    const r = sym().sendmsg(this.#fd, this.#msg, MSG_NOSIGNAL);
    return r < 0 ? fail() : r;
  }

  receiveReply(): number {
    const r = sym().read(this.#fd, this.#reply, 1n);
    return r < 0 ? fail() : r;
  }

  /** Closes passt's end (the helper's end belongs to whoever attached it) */
  close(): void {
    if (this.#fd >= 0) sym().close(this.#fd);
    this.#fd = -1;
  }
}

function addressOf(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}
