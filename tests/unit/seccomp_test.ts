// The seccomp filter, judged by running it: every verdict below comes from
// executing the built BPF program (tests/support/bpf.ts) on a seccomp_data.

import assert from "node:assert/strict";
import type { Arch } from "../../src/abi.ts";
import { EXIT_FAILURE, RuntimeFailure } from "../../src/errors.ts";
import {
  AUDIT_ARCH_AARCH64,
  AUDIT_ARCH_X86_64,
  buildSeccompFilter,
  CLONE,
  CLONE3,
  IOCTL,
  NEWEST_CALL,
  PRCTL,
  REFUSED_CALLS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SOCKET,
  SYS_SECCOMP,
  X32_SYSCALL_BIT,
} from "../../src/seccomp.ts";
import { assertWellFormed, runFilter } from "../support/bpf.ts";
import { unit } from "./_unit.ts";

const EPERM = SECCOMP_RET_ERRNO | 1;
const ENOSYS = SECCOMP_RET_ERRNO | 38;
const ALLOW = SECCOMP_RET_ALLOW;
const KILL = SECCOMP_RET_KILL_PROCESS;
const AUDIT: Record<Arch, number> = { x86_64: AUDIT_ARCH_X86_64, aarch64: AUDIT_ARCH_AARCH64 };
const AUDIT_ARCH_I386 = 0x40000003;
const AUDIT_ARCH_ARM = 0x40000028;

/** The minimum list: each must be refused on every architecture */
const REQUIRED = [
  "execve",
  "execveat",
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "kexec_load",
  "init_module",
  "finit_module",
  "bpf",
  "mount",
  "umount2",
  "unshare",
  "setns",
  "pivot_root",
  "chroot",
];

/** Calls the helper (and Deno under it) makes, which must stay allowed */
const NEEDED: Record<Arch, Record<string, number>> = {
  x86_64: {
    read: 0,
    write: 1,
    close: 3,
    ioctl: 16,
    mmap: 9,
    mprotect: 10,
    munmap: 11,
    rt_sigaction: 13,
    madvise: 28,
    socket: 41,
    connect: 42,
    sendto: 44,
    recvmsg: 47,
    setsockopt: 54,
    getsockopt: 55,
    exit: 60,
    fcntl: 72,
    prctl: 157,
    futex: 202,
    getdents64: 217,
    exit_group: 231,
    epoll_wait: 232,
    inotify_add_watch: 254,
    openat: 257,
    ppoll: 271,
    inotify_init1: 294,
    seccomp: 317,
    statx: 332,
  },
  aarch64: {
    ioctl: 29,
    getdents64: 61,
    read: 63,
    write: 64,
    ppoll: 73,
    exit: 93,
    exit_group: 94,
    futex: 98,
    rt_sigaction: 134,
    prctl: 167,
    socket: 198,
    connect: 203,
    sendto: 206,
    setsockopt: 208,
    getsockopt: 209,
    recvmsg: 212,
    munmap: 215,
    mmap: 222,
    mprotect: 226,
    madvise: 233,
    inotify_init1: 26,
    inotify_add_watch: 27,
    fcntl: 25,
    openat: 56,
    close: 57,
    seccomp: 277,
    statx: 291,
  },
};

// What glibc's pthread_create passes to clone()
const CLONE_THREAD_FLAGS = 0x3d0f00n;
const NAMESPACE_FLAGS: Record<string, bigint> = {
  CLONE_NEWNS: 0x00020000n,
  CLONE_NEWCGROUP: 0x02000000n,
  CLONE_NEWUTS: 0x04000000n,
  CLONE_NEWIPC: 0x08000000n,
  CLONE_NEWUSER: 0x10000000n,
  CLONE_NEWPID: 0x20000000n,
  CLONE_NEWNET: 0x40000000n,
};

const ARCHES: Arch[] = ["x86_64", "aarch64"];

/**
 * Arguments that calls judged by their arguments accept: socket(AF_INET,
 * SOCK_STREAM | SOCK_CLOEXEC), clone() without namespace flags, an ioctl
 * request outside the socket range
 */
const USUAL_ARGS = [2n, 0x80001n, 0n];

const AF = {
  UNSPEC: 0n,
  UNIX: 1n,
  INET: 2n,
  INET6: 10n,
  NETLINK: 16n,
  PACKET: 17n,
  BLUETOOTH: 31n,
  VSOCK: 40n,
};
const SOCK = {
  STREAM: 1n,
  DGRAM: 2n,
  RAW: 3n,
  SEQPACKET: 5n,
  PACKET: 10n,
  NONBLOCK: 0x800n,
  CLOEXEC: 0x80000n,
};

function killVerdict(arch: Arch, nr: number, args: readonly bigint[] = []): number {
  return runFilter(buildSeccompFilter(arch, { kill: true }).program, {
    nr,
    arch: AUDIT[arch],
    args,
  });
}

function verdict(
  arch: Arch,
  nr: number,
  args: readonly bigint[] = [],
  audit = AUDIT[arch],
): number {
  return runFilter(buildSeccompFilter(arch).program, { nr, arch: audit, args });
}

function number(arch: Arch, name: string): number {
  const c = REFUSED_CALLS.find((r) => r.name === name);
  assert.ok(c, `${name} is in REFUSED_CALLS`);
  const nr = c[arch];
  assert.notEqual(nr, null, `${name} has a number on ${arch}`);
  return nr!;
}

for (const arch of ARCHES) {
  unit(`buildSeccompFilter() on ${arch} refuses each required call with EPERM`, () => {
    for (const name of REQUIRED) {
      assert.equal(verdict(arch, number(arch, name)), EPERM, name);
    }
  });

  unit(`buildSeccompFilter() on ${arch} refuses every listed call with EPERM`, () => {
    const filter = buildSeccompFilter(arch);
    const listed = REFUSED_CALLS.filter((c) => c[arch] !== null);
    assert.deepEqual(filter.refused, listed.map((c) => c.name));
    for (const c of listed) assert.equal(verdict(arch, c[arch]!), EPERM, c.name);
  });

  unit(`buildSeccompFilter() on ${arch} allows what the helper and Deno need`, () => {
    for (const [name, nr] of Object.entries(NEEDED[arch])) {
      assert.equal(verdict(arch, nr, USUAL_ARGS), ALLOW, name);
    }
  });

  unit(
    `buildSeccompFilter() on ${arch} allows every number it does not list, up to the newest it knows`,
    () => {
      // Exhaustive over the whole native range: the program refuses exactly the
      // table, answers clone3 and anything newer than NEWEST_CALL ENOSYS, and
      // allows the rest
      const listed = new Set(REFUSED_CALLS.map((c) => c[arch]).filter((n) => n !== null));
      for (let nr = 0; nr < 1024; nr++) {
        const want = listed.has(nr)
          ? EPERM
          : nr === CLONE3[arch] || nr > NEWEST_CALL[arch]
          ? ENOSYS
          : ALLOW;
        assert.equal(verdict(arch, nr, USUAL_ARGS), want, `nr ${nr}`);
      }
    },
  );

  unit(`buildSeccompFilter() on ${arch} answers ENOSYS to every call newer than it knows`, () => {
    const newest = NEWEST_CALL[arch];
    assert.equal(newest, 469, "file_setattr, Linux 6.17");
    assert.equal(verdict(arch, newest, USUAL_ARGS), ALLOW);
    for (const nr of [newest + 1, newest + 2, 470, 500, 548, 1000, 0xffff, 0x3fffffff]) {
      assert.equal(verdict(arch, nr, USUAL_ARGS), ENOSYS, `nr ${nr}`);
      // ...in kill mode too: ENOSYS is what an older kernel says, and libc
      // falls back on it
      assert.equal(killVerdict(arch, nr, USUAL_ARGS), ENOSYS, `nr ${nr}, kill`);
    }
  });

  unit(
    `buildSeccompFilter() on ${arch} refuses open_tree_attr like the rest of the mount API`,
    () => {
      assert.equal(verdict(arch, 467), EPERM);
    },
  );

  unit(`buildSeccompFilter() on ${arch} refuses the TUN ioctls, keeps the terminal ones`, () => {
    const nr = IOCTL[arch];
    const tun = {
      TUNSETNOCSUM: 0x400454c8,
      TUNSETIFF: 0x400454ca,
      TUNSETPERSIST: 0x400454cb,
      TUNSETOWNER: 0x400454cc,
      TUNSETLINK: 0x400454cd,
      TUNSETGROUP: 0x400454ce,
      TUNGETFEATURES: 0x800454cf,
      TUNSETOFFLOAD: 0x400454d0,
      TUNGETIFF: 0x800454d2,
      TUNATTACHFILTER: 0x401054d5,
      TUNSETQUEUE: 0x400454d9,
      TUNSETSTEERINGEBPF: 0x800454e0,
      TUNSETCARRIER: 0x400454e2,
      TUNGETDEVNETNS: 0x54e3,
      "'T' 0xff": 0xc0ff54ff,
      "'T' 0xc0, no direction": 0x54c0,
    };
    for (const [name, request] of Object.entries(tun)) {
      assert.equal(verdict(arch, nr, [3n, BigInt(request)]), EPERM, name);
      // The kernel takes the request as an unsigned int: high bits change nothing
      assert.equal(verdict(arch, nr, [3n, BigInt(request) | (1n << 40n)]), EPERM, `${name} high`);
    }
    const terminal = {
      TCGETS: 0x5401,
      TCSETS: 0x5402,
      TIOCGWINSZ: 0x5413,
      FIONREAD: 0x541b,
      FIONBIO: 0x5421,
      TCGETS2: 0x802c542a,
      TIOCGPTN: 0x80045430,
      TIOCGPTPEER: 0x5441,
      FIONCLEX: 0x5450,
      FIOCLEX: 0x5451,
      FIOASYNC: 0x5452,
      FIOQSIZE: 0x5460,
      "'T' 0xbf": 0x54bf,
      "'U' 0xca": 0x400455ca,
      "'S' 0xca": 0x400453ca,
    };
    for (const [name, request] of Object.entries(terminal)) {
      assert.equal(verdict(arch, nr, [1n, BigInt(request)]), ALLOW, name);
    }
  });

  unit(
    `buildSeccompFilter() on ${arch} lets prctl() make the process non-dumpable, never dumpable`,
    () => {
      const nr = PRCTL[arch];
      const PR_SET_DUMPABLE = 4n;
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE, 0n]), ALLOW, "0: not dumpable");
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE, 1n]), EPERM, "1: dumpable");
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE, 2n]), EPERM, "2: root-only dumps");
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE, 1n << 32n]), EPERM, "high half");
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE, -1n]), EPERM);
      // The option is an int: PR_SET_DUMPABLE with high bits is still it
      assert.equal(verdict(arch, nr, [PR_SET_DUMPABLE | (1n << 32n), 1n]), EPERM);
      // Everything else prctl() does stays as it was
      for (const option of [3n, /* GET_DUMPABLE */ 15n, /* SET_NAME */ 21n, 38n, 39n]) {
        assert.equal(verdict(arch, nr, [option, 1n]), ALLOW, `option ${option}`);
      }
    },
  );

  unit(`buildSeccompFilter() on ${arch} refuses MPTCP and SCTP stream sockets`, () => {
    const nr = SOCKET[arch];
    for (const domain of [AF.UNIX, AF.INET, AF.INET6]) {
      for (const protocol of [0n, 6n]) {
        assert.equal(verdict(arch, nr, [domain, SOCK.STREAM | SOCK.CLOEXEC, protocol]), ALLOW);
      }
      for (const protocol of [262n, /* MPTCP */ 132n, /* SCTP */ 17n, 1n, 255n, 6n << 32n | 1n]) {
        assert.equal(
          verdict(arch, nr, [domain, SOCK.STREAM, protocol]),
          EPERM,
          `domain ${domain} protocol ${protocol}`,
        );
      }
      // The protocol is an int: high bits change nothing
      assert.equal(verdict(arch, nr, [domain, SOCK.STREAM, 6n | (1n << 32n)]), ALLOW);
    }
  });

  unit(
    `buildSeccompFilter() on ${arch} with kill refuses by killing, and only that changes`,
    () => {
      const normal = buildSeccompFilter(arch);
      const kill = buildSeccompFilter(arch, { kill: true });
      assert.equal(normal.kill, false);
      assert.equal(kill.kill, true);
      assert.deepEqual(kill.refused, normal.refused);
      assert.equal(kill.length, normal.length);
      const cases: [number, bigint[], number][] = [
        [0, [], AUDIT[arch]],
        [CLONE3[arch], [], AUDIT[arch]],
        [SOCKET[arch], [AF.NETLINK, 3n, 0n], AUDIT[arch]],
        [IOCTL[arch], [3n, 0x400454can], AUDIT[arch]],
        [PRCTL[arch], [4n, 1n], AUDIT[arch]],
        [CLONE[arch], [NAMESPACE_FLAGS.CLONE_NEWNET!], AUDIT[arch]],
        [1, [], AUDIT_ARCH_I386],
        ...REFUSED_CALLS.filter((c) => c[arch] !== null).map((c) =>
          [c[arch]!, [] as bigint[], AUDIT[arch]] as [number, bigint[], number]
        ),
      ];
      for (const [nr, args, audit] of cases) {
        const v = verdict(arch, nr, args, audit);
        const k = runFilter(kill.program, { nr, arch: audit, args });
        assert.equal(k, v === EPERM ? KILL : v, `nr ${nr}`);
      }
    },
  );

  unit(`buildSeccompFilter() on ${arch} lets clone() make threads but no namespace`, () => {
    const nr = CLONE[arch];
    assert.equal(verdict(arch, nr, [CLONE_THREAD_FLAGS]), ALLOW, "thread");
    assert.equal(verdict(arch, nr, [0x11n /* SIGCHLD: fork */]), ALLOW, "fork");
    // Only the low 32 bits are flags to the kernel
    assert.equal(
      verdict(arch, nr, [CLONE_THREAD_FLAGS | (0x40000000n << 32n)]),
      ALLOW,
      "high half",
    );
    for (const [name, flag] of Object.entries(NAMESPACE_FLAGS)) {
      assert.equal(verdict(arch, nr, [CLONE_THREAD_FLAGS | flag]), EPERM, name);
      assert.equal(verdict(arch, nr, [flag]), EPERM, `${name} alone`);
    }
  });

  unit(
    `buildSeccompFilter() on ${arch} allows stream sockets of AF_UNIX, AF_INET and AF_INET6 only`,
    () => {
      const nr = SOCKET[arch];
      for (const domain of [AF.UNIX, AF.INET, AF.INET6]) {
        for (const flags of [0n, SOCK.CLOEXEC, SOCK.NONBLOCK, SOCK.CLOEXEC | SOCK.NONBLOCK]) {
          assert.equal(
            verdict(arch, nr, [domain, SOCK.STREAM | flags, 0n]),
            ALLOW,
            `${domain}/${flags}`,
          );
        }
        for (
          const type of [0n, SOCK.DGRAM, SOCK.RAW, SOCK.SEQPACKET, SOCK.PACKET, 4n, 6n, 7n, 9n, 15n]
        ) {
          assert.equal(
            verdict(arch, nr, [domain, type | SOCK.CLOEXEC, 0n]),
            EPERM,
            `domain ${domain} type ${type}`,
          );
        }
      }
      for (
        const domain of [AF.UNSPEC, AF.NETLINK, AF.PACKET, AF.BLUETOOTH, AF.VSOCK, 3n]
      ) {
        assert.equal(verdict(arch, nr, [domain, SOCK.STREAM, 0n]), EPERM, `domain ${domain}`);
      }
      // The domain is an int: only the low 32 bits count, as for the kernel
      assert.equal(verdict(arch, nr, [AF.UNIX | (7n << 32n), SOCK.STREAM, 0n]), ALLOW);
    },
  );

  unit(
    `buildSeccompFilter() on ${arch} refuses the socket ioctls that reconfigure the network`,
    () => {
      const nr = IOCTL[arch];
      const refused = {
        SIOCADDRT: 0x890b,
        SIOCSIFFLAGS: 0x8914,
        SIOCSIFADDR: 0x8916,
        SIOCSIFMTU: 0x8922,
        SIOCBRADDBR: 0x89a0,
        SIOCDEVPRIVATE: 0x89f0,
        SIOCSIWFREQ: 0x8b04,
        first: 0x8900,
        last: 0x8bff,
      };
      for (const [name, request] of Object.entries(refused)) {
        assert.equal(verdict(arch, nr, [3n, BigInt(request)]), EPERM, name);
      }
      const allowed = {
        TCGETS: 0x5401,
        TIOCGWINSZ: 0x5413,
        FIONBIO: 0x5421,
        FIOCLEX: 0x5451,
        below: 0x88ff,
        above: 0x8c00,
        high: 0xc0105500,
      };
      for (const [name, request] of Object.entries(allowed)) {
        assert.equal(verdict(arch, nr, [3n, BigInt(request)]), ALLOW, name);
      }
    },
  );

  unit(`buildSeccompFilter() on ${arch} answers clone3() ENOSYS so glibc uses clone()`, () => {
    assert.equal(verdict(arch, CLONE3[arch]), ENOSYS);
  });

  unit(`buildSeccompFilter() on ${arch} refuses every call of a foreign ABI`, () => {
    const foreign = [
      AUDIT_ARCH_I386,
      AUDIT_ARCH_ARM,
      AUDIT[arch === "x86_64" ? "aarch64" : "x86_64"],
      0,
    ];
    for (const audit of foreign) {
      for (const nr of [0, 1, 3, 11, 56, 59, 63, 221, 435]) {
        assert.equal(verdict(arch, nr, [], audit), EPERM, `arch 0x${audit.toString(16)} nr ${nr}`);
      }
    }
  });

  unit(`buildSeccompFilter() on ${arch} is a valid program that always returns`, () => {
    const filter = buildSeccompFilter(arch);
    assert.equal(filter.arch, arch);
    assert.equal(filter.auditArch, AUDIT[arch]);
    assert.equal(filter.seccompNr, SYS_SECCOMP[arch]);
    assertWellFormed(filter.program, filter.length);
  });

  unit(`REFUSED_CALLS has distinct ${arch} numbers`, () => {
    const numbers = REFUSED_CALLS.map((c) => c[arch]).filter((n) => n !== null);
    assert.equal(new Set(numbers).size, numbers.length);
    for (const special of [CLONE, CLONE3, SOCKET, IOCTL, PRCTL]) {
      assert.ok(!numbers.includes(special[arch]));
    }
    assert.ok(!numbers.includes(SYS_SECCOMP[arch]));
  });
}

unit("buildSeccompFilter() on x86_64 refuses x32 numbers, so they cannot bypass it", () => {
  const x32 = (nr: number) => verdict("x86_64", X32_SYSCALL_BIT | nr);
  assert.equal(x32(520), EPERM, "x32 execve");
  assert.equal(x32(545), EPERM, "x32 execveat");
  assert.equal(x32(521), EPERM, "x32 ptrace");
  assert.equal(x32(101), EPERM, "ptrace's number with the x32 bit");
  assert.equal(x32(165), EPERM, "mount's number with the x32 bit");
  // Even harmless ones: an x86_64 process never makes x32 calls
  assert.equal(x32(0), EPERM, "x32 read");
  assert.equal(verdict("x86_64", -1), EPERM, "nr -1 is above the x32 bit as unsigned");
});

unit(
  "buildSeccompFilter() on aarch64 has no x32 rule (bit 30 is just a number it does not know)",
  () => {
    assert.equal(verdict("aarch64", X32_SYSCALL_BIT), ENOSYS);
    assert.equal(verdict("aarch64", -1), ENOSYS);
  },
);

for (const arch of ["riscv64", "x86", "arm", "", "X86_64"]) {
  unit(`buildSeccompFilter() fails closed on unknown architecture "${arch}"`, () => {
    assert.throws(() => buildSeccompFilter(arch), (e: unknown) => {
      assert.ok(e instanceof RuntimeFailure);
      assert.equal(e.exitCode, EXIT_FAILURE);
      assert.match(e.message, /^Can't build the seccomp filter: unsupported architecture/);
      assert.ok(e.message.includes(`"${arch}"`));
      assert.match(e.message, /x86_64 and aarch64/);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  });
}
