// Kernel ABI: constants and struct layouts, under their kernel names.
//
// Pure data, no native calls, so every offset here is unit-tested without
// permissions. The layouts are those of LP64 Linux, which x86_64 and aarch64
// share (8-byte pointers and size_t, 4-byte int); the few values that differ
// between the two architectures are picked by `arch` below.

export type Arch = "x86_64" | "aarch64";

// Socket levels, types and options (include/linux/socket.h, uapi/linux/tcp.h)
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOCK_NONBLOCK = 0o4000;
export const SOL_SOCKET = 1;
export const SOL_TCP = 6;
export const SO_PEERCRED = 17;
export const SCM_RIGHTS = 1;
export const SCM_CREDENTIALS = 2;
export const TCP_REPAIR = 19;

// Socket filters (include/uapi/asm-generic/socket.h, the same on x86_64 and
// aarch64): the input hold attaches one while a socket is in repair mode.
// SO_GET_FILTER shares SO_ATTACH_FILTER's number, SO_DETACH_BPF
// SO_DETACH_FILTER's.
export const SO_ATTACH_FILTER = 26;
export const SO_GET_FILTER = 26;
export const SO_DETACH_FILTER = 27;
export const SO_ATTACH_BPF = 50;
export const SO_COOKIE = 57;

// recvmsg()/send() flags (include/linux/socket.h)
export const MSG_CTRUNC = 0x8;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;

/** include/net/scm.h, not in UAPI: the most descriptors one SCM_RIGHTS carries */
export const SCM_MAX_FD = 253;

// TCP_REPAIR values (uapi/linux/tcp.h): the protocol's command bytes
export const TCP_REPAIR_ON = 1;
export const TCP_REPAIR_OFF = 0;
export const TCP_REPAIR_OFF_NO_WP = -1;

// struct iovec
export const IOVEC_SIZE = 16;
export const IOV_BASE = 0;
export const IOV_LEN = 8;

// struct msghdr
export const MSGHDR_SIZE = 56;
export const MSG_NAME = 0;
export const MSG_NAMELEN = 8;
export const MSG_IOV = 16;
export const MSG_IOVLEN = 24;
export const MSG_CONTROL = 32;
export const MSG_CONTROLLEN = 40;
export const MSG_FLAGS = 48;

// struct cmsghdr: cmsg_len is a size_t, so the header is 16 bytes and
// CMSG_ALIGN() rounds to 8
export const CMSG_HDR_SIZE = 16;
export const CMSG_LEN_OFF = 0;
export const CMSG_LEVEL_OFF = 8;
export const CMSG_TYPE_OFF = 12;

/** CMSG_ALIGN(len) */
export function cmsgAlign(len: number): number {
  return (len + 7) & ~7;
}

/** CMSG_SPACE(len) */
export function cmsgSpace(len: number): number {
  return CMSG_HDR_SIZE + cmsgAlign(len);
}

/** CMSG_LEN(len) */
export function cmsgLen(len: number): number {
  return CMSG_HDR_SIZE + len;
}

/** Room for one SCM_RIGHTS message with SCM_MAX_FD descriptors */
export const CONTROL_SIZE = cmsgSpace(SCM_MAX_FD * 4);

// struct sockaddr_un
export const SUN_PATH_OFF = 2;
export const SUN_PATH_MAX = 108;
export const SOCKADDR_UN_SIZE = SUN_PATH_OFF + SUN_PATH_MAX;

// struct ucred (SO_PEERCRED)
export const UCRED_SIZE = 12;
export const UCRED_PID = 0;
export const UCRED_UID = 4;
export const UCRED_GID = 8;

// statx() (uapi/linux/stat.h): the layout is the same on every architecture
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_EMPTY_PATH = 0x1000;
export const STATX_TYPE = 0x1;
export const STATX_MODE = 0x2;
export const STATX_NLINK = 0x4;
export const STATX_UID = 0x8;
export const STATX_INO = 0x100;
export const STATX_BTIME = 0x800;
export const STATX_SIZE = 256;
export const STX_MASK = 0;
export const STX_NLINK = 16;
export const STX_UID = 20;
export const STX_MODE = 28;
export const STX_INO = 32;
export const STX_BTIME = 80; // struct statx_timestamp: __s64 tv_sec; __u32 tv_nsec
export const STX_DEV_MAJOR = 136;
export const STX_DEV_MINOR = 140;
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFIFO = 0o010000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

// open() flags (uapi/asm-generic/fcntl.h; O_DIRECTORY differs on arm64)
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;

/** unshare(): a private copy of the descriptor table (uapi/linux/sched.h) */
export const CLONE_FILES = 0x00000400;
export function oDirectory(arch: Arch): number {
  return arch === "aarch64" ? 0o40000 : 0o200000;
}
/** O_NOFOLLOW (arch/arm64/include/uapi/asm/fcntl.h moves it too) */
export function oNoFollow(arch: Arch): number {
  return arch === "aarch64" ? 0o100000 : 0o400000;
}

// inotify (uapi/linux/inotify.h)
export const IN_CLOEXEC = 0o2000000;
export const IN_NONBLOCK = 0o4000;
export const IN_MOVED_FROM = 0x40;
export const IN_MOVED_TO = 0x80;
export const IN_CREATE = 0x100;
export const IN_DELETE = 0x200;
export const IN_DELETE_SELF = 0x400;
export const IN_MOVE_SELF = 0x800;
export const IN_UNMOUNT = 0x2000;
export const IN_Q_OVERFLOW = 0x4000;
export const IN_IGNORED = 0x8000;
export const IN_ONLYDIR = 0x1000000;
export const IN_MASK_ADD = 0x20000000;
export const IN_ISDIR = 0x40000000;
export const INOTIFY_EVENT_HDR = 16; // wd, mask, cookie, len; then the name
export const NAME_MAX = 255;

// poll()
export const POLLIN = 0x1;
/** The longest timeout poll() takes (an int of milliseconds) */
export const POLL_TIMEOUT_MAX = 0x7fffffff;
export const POLLFD_SIZE = 8;

// struct linux_dirent64 (getdents64)
export const DIRENT_RECLEN = 16;
export const DIRENT_TYPE = 18;
export const DIRENT_NAME = 19;
// d_type values (include/linux/fs_types.h): the tests lay out getdents64 buffers with them
export const DT_DIR = 4;
export const DT_REG = 8;
export const DT_SOCK = 12;

// prctl() and seccomp (uapi/linux/prctl.h, uapi/linux/seccomp.h)
export const PR_SET_DUMPABLE = 4;
export const PR_GET_DUMPABLE = 3;
export const PR_SET_NO_NEW_PRIVS = 38;
export const PR_GET_NO_NEW_PRIVS = 39;
export const PR_GET_SECCOMP = 21;
export const SECCOMP_MODE_FILTER = 2; // what PR_GET_SECCOMP answers once filtered
export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
export const SOCK_FPROG_SIZE = 16; // unsigned short len; struct sock_filter *filter
export const SOCK_FILTER_SIZE = 8; // u16 code, u8 jt, u8 jf, u32 k

// bpf(2) (uapi/linux/bpf.h): loading the input hold's one eBPF program
export const SYS_BPF: Readonly<Record<Arch, number>> = { x86_64: 321, aarch64: 280 };
export const BPF_PROG_LOAD = 5;
export const BPF_PROG_TYPE_SOCKET_FILTER = 1;
// union bpf_attr, the BPF_PROG_LOAD part: u32 prog_type, u32 insn_cnt,
// u64 insns, u64 license, u32 log_level, u32 log_size, u64 log_buf,
// u32 kern_version, u32 prog_flags, char prog_name[16]. A kernel reads only
// the size it is given and takes the rest as zero.
export const BPF_ATTR_PROG_LOAD_SIZE = 64;
export const BPF_ATTR_PROG_TYPE = 0;
export const BPF_ATTR_INSN_CNT = 4;
export const BPF_ATTR_INSNS = 8;
export const BPF_ATTR_LICENSE = 16;
export const BPF_ATTR_PROG_NAME = 48;
/** BPF_OBJ_NAME_LEN, with the terminating NUL */
export const BPF_OBJ_NAME_LEN = 16;
/** struct bpf_insn: u8 code, u8 dst_reg:4 src_reg:4, s16 off, s32 imm */
export const BPF_INSN_SIZE = 8;

/** Maps Deno.build.arch to ours; anything else is unsupported */
export function archOf(denoArch: string): Arch | null {
  if (denoArch === "x86_64") return "x86_64";
  if (denoArch === "aarch64") return "aarch64";
  return null;
}
