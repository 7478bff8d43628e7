// Socket filters seen and set from the test's side: what SO_GET_FILTER says
// about a socket the helper holds, and filters of a socket's "own" that the
// helper must leave alone.
//
// Test tooling only, never imported by the program (whose complete native
// surface is src/ffi/libc.ts). Loading an eBPF program needs root or CAP_BPF.

import {
  BPF_ATTR_INSN_CNT,
  BPF_ATTR_INSNS,
  BPF_ATTR_LICENSE,
  BPF_ATTR_PROG_LOAD_SIZE,
  BPF_ATTR_PROG_TYPE,
  BPF_PROG_LOAD,
  BPF_PROG_TYPE_SOCKET_FILTER,
  SO_ATTACH_BPF,
  SO_ATTACH_FILTER,
  SO_GET_FILTER,
  SOCK_FPROG_SIZE,
  SOL_SOCKET,
  SYS_BPF,
} from "../../src/abi.ts";
import { LazyLibc } from "./test_libc.ts";

const int = "i32";
const buffer = "buffer";

const SYMBOLS = {
  setsockopt: { parameters: [int, int, int, buffer, "u32"], result: int },
  getsockopt: { parameters: [int, int, int, buffer, buffer], result: int },
  syscall: { parameters: ["i64", "i64", buffer, "u64"], result: "i64" },
  close: { parameters: [int], result: int },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

const libc = new LazyLibc(SYMBOLS);
const c = () => libc.c;
const check = (call: string, r: number | bigint) => libc.check(call, r);
const soft = (r: number | bigint) => libc.soft(r);

/** SO_LOCK_FILTER (uapi/asm-generic/socket.h): no filter may be attached or removed after */
export const SO_LOCK_FILTER = 44;
export const EACCES = 13;

/**
 * SO_GET_FILTER with optlen 0: the instructions of the socket's classic
 * filter, 0 if none, -EACCES for an eBPF program, or another -errno
 */
export function filterLength(fd: number): number {
  const len = new Uint32Array([0]);
  const r = soft(
    c().getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, new Uint8Array(8), new Uint8Array(len.buffer)),
  );
  return r < 0 ? r : len[0]!;
}

/** Classic instructions: [code, jt, jf, k] */
export type ClassicInsn = [number, number, number, number];

/** A classic filter that keeps every packet whole: ld len; ret a */
export const ACCEPT_ALL_CLASSIC: ClassicInsn[] = [[0x80, 0, 0, 0], [0x16, 0, 0, 0]];

/** SO_ATTACH_FILTER of a classic program */
export function attachClassic(fd: number, insns: readonly ClassicInsn[]): void {
  const program = new Uint8Array(insns.length * 8);
  const view = new DataView(program.buffer);
  insns.forEach(([code, jt, jf, k], i) => {
    view.setUint16(i * 8, code, true);
    view.setUint8(i * 8 + 2, jt);
    view.setUint8(i * 8 + 3, jf);
    view.setUint32(i * 8 + 4, k >>> 0, true);
  });
  const fprog = new Uint8Array(SOCK_FPROG_SIZE);
  const fview = new DataView(fprog.buffer);
  fview.setUint16(0, insns.length, true);
  fview.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(program))), true);
  check(
    "setsockopt(SO_ATTACH_FILTER)",
    c().setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, SOCK_FPROG_SIZE),
  );
  void program;
}

/** Loads an eBPF socket filter that keeps every packet (r0 = -1; exit): its descriptor */
export function loadAcceptAllEbpf(): number {
  // r0 = -1 (BPF_ALU64 | BPF_MOV | BPF_K, imm 0xffffffff), then exit (BPF_JMP | BPF_EXIT)
  const insns = new Uint8Array(16);
  insns.set([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 0);
  insns.set([0x95, 0, 0, 0, 0, 0, 0, 0], 8);
  const license = new TextEncoder().encode("GPL\0");
  const attr = new Uint8Array(BPF_ATTR_PROG_LOAD_SIZE);
  const view = new DataView(attr.buffer);
  const address = (b: Uint8Array) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  view.setUint32(BPF_ATTR_PROG_TYPE, BPF_PROG_TYPE_SOCKET_FILTER, true);
  view.setUint32(BPF_ATTR_INSN_CNT, 2, true);
  view.setBigUint64(BPF_ATTR_INSNS, address(insns), true);
  view.setBigUint64(BPF_ATTR_LICENSE, address(license), true);
  const nr = SYS_BPF[Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"];
  const fd = check(
    "bpf(BPF_PROG_LOAD)",
    c().syscall(BigInt(nr), BigInt(BPF_PROG_LOAD), attr, BigInt(attr.length)),
  );
  void [insns, license];
  return fd;
}

/** SO_ATTACH_BPF of a loaded program */
export function attachEbpf(fd: number, program: number): void {
  const v = new Int32Array([program]);
  check(
    "setsockopt(SO_ATTACH_BPF)",
    c().setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, new Uint8Array(v.buffer), 4),
  );
}

/** SO_LOCK_FILTER: from now on, attaching or removing a filter fails with EPERM */
export function lockFilter(fd: number): void {
  const v = new Int32Array([1]);
  check(
    "setsockopt(SO_LOCK_FILTER)",
    c().setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, new Uint8Array(v.buffer), 4),
  );
}

export function closeProgram(fd: number): void {
  c().close(fd);
}
