// Native calls of the fake passt used by the tests and the bench.
//
// This is test tooling, never imported by the program: the program's complete
// native surface is src/ffi/libc.ts. A fake passt needs calls the helper must
// never have (bind, listen, accept, sendmsg, socketpair, pipe), so they live
// here, in their own table, rather than widening the program's.

import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  cmsgLen,
  cmsgSpace,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOCKADDR_UN_SIZE,
  SOL_SOCKET,
  SOL_TCP,
  SUN_PATH_OFF,
  TCP_REPAIR,
} from "../../src/abi.ts";
import { describeErrno } from "../../src/errors.ts";
import { LazyLibc, PeerError } from "./test_libc.ts";

const int = "i32";
const uint = "u32";
const buffer = "buffer";

const SYMBOLS = {
  socket: { parameters: [int, int, int], result: int },
  socketpair: { parameters: [int, int, int, buffer], result: int },
  pipe2: { parameters: [buffer, int], result: int },
  bind: { parameters: [int, buffer, uint], result: int },
  listen: { parameters: [int, int], result: int },
  accept4: { parameters: [int, buffer, buffer, int], result: int },
  connect: { parameters: [int, buffer, uint], result: int },
  getsockname: { parameters: [int, buffer, buffer], result: int },
  sendmsg: { parameters: [int, buffer, int], result: "i64" },
  send: { parameters: [int, buffer, "usize", int], result: "i64" },
  recv: { parameters: [int, buffer, "usize", int], result: "i64" },
  setsockopt: { parameters: [int, int, int, buffer, uint], result: int },
  getsockopt: { parameters: [int, int, int, buffer, buffer], result: int },
  shutdown: { parameters: [int, int], result: int },
  close: { parameters: [int], result: int },
  poll: { parameters: [buffer, "u64", int], result: int },
  fcntl: { parameters: [int, int, int], result: int },
  open: { parameters: [buffer, int, int], result: int },
  read: { parameters: [int, buffer, "usize"], result: "i64" },
  getdents64: { parameters: [int, buffer, "usize"], result: "i64" },
  readlinkat: { parameters: [int, buffer, buffer, "usize"], result: "i64" },
  mkfifo: { parameters: [buffer, uint], result: int },
  write: { parameters: [int, buffer, "usize"], result: "i64" },
  // int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf)
  statx: { parameters: [int, buffer, int, uint, buffer], result: int },
  // The bench's hot path: int results, so that no call returns a BigInt
  sendmsg32: { name: "sendmsg", parameters: [int, buffer, int], result: int },
  recv32: { name: "recv", parameters: [int, buffer, "usize", int], result: int },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

const libc = new LazyLibc(SYMBOLS);
const c = () => libc.c;
const check = (call: string, r: number | bigint) => libc.check(call, r);
const soft = (r: number | bigint) => libc.soft(r);

export function closeFd(fd: number): void {
  c().close(fd);
}

export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) c().close(fd);
}

// ---- UNIX sockets: the fake passt's repair socket ----

export function sockaddrUnFor(path: string): Uint8Array {
  const name = new TextEncoder().encode(path);
  if (name.length > 107) throw new Error(`test path too long: ${path}`);
  const sa = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(name, SUN_PATH_OFF);
  return sa;
}

/** A bound UNIX stream socket; listening unless `listen` is false */
export function unixListener(
  path: string,
  listen = true,
  type = SOCK_STREAM,
  backlog = 16,
): number {
  const fd = check("socket", c().socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  check("bind", c().bind(fd, sockaddrUnFor(path), SOCKADDR_UN_SIZE));
  if (listen) check("listen", c().listen(fd, backlog));
  return fd;
}

/**
 * A listener at `path` whose backlog is full: listen(0) and one connection
 * nobody accepts. Returns [listener, the queued client]; the next connect()
 * blocks, or fails with EAGAIN if non-blocking.
 */
export function fullListener(path: string): [number, number] {
  const listener = unixListener(path, true, SOCK_STREAM, 0);
  const client = check("socket", c().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  check("connect", c().connect(client, sockaddrUnFor(path), SOCKADDR_UN_SIZE));
  return [listener, client];
}

/** A FIFO whose path is given as raw bytes (which need not be UTF-8) */
export function makeFifoRaw(dir: string, name: Uint8Array): void {
  const path = new Uint8Array([...encoder.encode(dir + "/"), ...name, 0]);
  check("mkfifo", c().mkfifo(path, 0o600));
}

export function listenNow(fd: number): void {
  check("listen", c().listen(fd, 16));
}

/** Waits up to `ms` for `events` on fd: true if ready */
export function waitFor(fd: number, ms: number, events = 1 /* POLLIN */): boolean {
  const pfd = new Uint8Array(8);
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, events, true);
  const deadline = performance.now() + ms;
  for (;;) {
    const left = Math.max(0, Math.ceil(deadline - performance.now()));
    const r = soft(c().poll(pfd, 1n, left));
    if (r > 0) return true;
    if (r === 0) return false;
    if (r !== -4) throw new PeerError("poll", -r);
  }
}

/** accept() within `ms`, or throws */
export function acceptWithin(listener: number, ms: number): number {
  if (!waitFor(listener, ms)) throw new Error(`no connection within ${ms} ms`);
  return check(
    "accept4",
    c().accept4(listener, new Uint8Array(0), new Uint8Array(0), SOCK_CLOEXEC),
  );
}

/** Whether a connection is waiting on a listener right now (no wait) */
export function pendingConnection(listener: number): boolean {
  return waitFor(listener, 0);
}

/** A connected AF_UNIX pair */
export function unixPair(type = SOCK_STREAM): [number, number] {
  const sv = new Int32Array(2);
  check("socketpair", c().socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, new Uint8Array(sv.buffer)));
  return [sv[0]!, sv[1]!];
}

export function pipe(): [number, number] {
  const p = new Int32Array(2);
  check("pipe2", c().pipe2(new Uint8Array(p.buffer), SOCK_CLOEXEC));
  return [p[0]!, p[1]!];
}

// ---- messages to the helper ----

/** Control data for one SCM_RIGHTS message with `fds` */
export function rightsControl(fds: readonly number[]): Uint8Array {
  const control = new Uint8Array(cmsgSpace(fds.length * 4));
  const v = new DataView(control.buffer);
  v.setBigUint64(0, BigInt(cmsgLen(fds.length * 4)), true);
  v.setInt32(8, SOL_SOCKET, true);
  v.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((fd, i) => v.setInt32(16 + 4 * i, fd, true));
  return control;
}

/** Control data of one message at `level`/`type` with `payload` */
export function controlMessage(level: number, type: number, payload: Uint8Array): Uint8Array {
  const control = new Uint8Array(cmsgSpace(payload.length));
  const v = new DataView(control.buffer);
  v.setBigUint64(0, BigInt(cmsgLen(payload.length)), true);
  v.setInt32(8, level, true);
  v.setInt32(12, type, true);
  control.set(payload, 16);
  return control;
}

function address(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** sendmsg() of `data` with raw control bytes (may be empty): bytes sent or -errno */
export function sendRaw(fd: number, data: Uint8Array, control: Uint8Array): number {
  const iov = new Uint8Array(16);
  const iv = new DataView(iov.buffer);
  iv.setBigUint64(0, data.length ? address(data) : 0n, true);
  iv.setBigUint64(8, BigInt(data.length), true);
  const msg = new Uint8Array(56);
  const mv = new DataView(msg.buffer);
  mv.setBigUint64(16, address(iov), true);
  mv.setBigUint64(24, 1n, true);
  if (control.length > 0) {
    mv.setBigUint64(32, address(control), true);
    mv.setBigUint64(40, BigInt(control.length), true);
  }
  // MSG_NOSIGNAL: a helper that died must fail the test, not kill it
  const r = soft(c().sendmsg(fd, msg, 0x4000));
  // keep the buffers alive across the call (UnsafePointer.of does not)
  void [iov, data, control];
  return r;
}

/** Sends a command byte with `fds` attached, as passt does */
export function sendCommand(fd: number, command: number, fds: readonly number[]): void {
  const r = sendRaw(
    fd,
    new Uint8Array([command & 0xff]),
    fds.length ? rightsControl(fds) : new Uint8Array(0),
  );
  if (r < 0) throw new PeerError("sendmsg", -r);
  if (r !== 1) throw new Error(`sendmsg sent ${r} bytes`);
}

/** What arrived from the helper: a reply byte (signed), EOF, or nothing in time */
export type Reply = number | "eof" | "timeout" | "reset";

/** Receives one reply byte within `ms` */
export function readReply(fd: number, ms: number): Reply {
  if (!waitFor(fd, ms)) return "timeout";
  const b = new Uint8Array(1);
  const r = soft(c().recv(fd, b, 1n, 0x40 /* MSG_DONTWAIT */));
  if (r === 0) return "eof";
  if (r === -104) return "reset";
  if (r < 0) throw new PeerError("recv", -r);
  return (b[0]! << 24) >> 24;
}

/** Every byte available now, without waiting (to prove nothing stray was sent) */
export function drainNow(fd: number): Uint8Array {
  const out: number[] = [];
  const b = new Uint8Array(4096);
  for (;;) {
    const r = soft(c().recv(fd, b, 4096n, 0x40));
    if (r <= 0) break;
    out.push(...b.subarray(0, r));
  }
  return new Uint8Array(out);
}

export function shutdownWrite(fd: number): void {
  check("shutdown", c().shutdown(fd, 1));
}

// ---- TCP connections to hand over ----

export type Family = 4 | 6;

function loopback(family: Family, port: number): Uint8Array {
  if (family === 4) {
    const sa = new Uint8Array(16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port, false);
    sa.set([127, 0, 0, 1], 4);
    return sa;
  }
  const sa = new Uint8Array(28);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port, false);
  sa[23] = 1; // ::1
  return sa;
}

export function tcpSocket(family: Family): number {
  return check(
    "socket",
    c().socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0),
  );
}

export function udpSocket(family: Family = 4): number {
  return check(
    "socket",
    c().socket(family === 4 ? AF_INET : AF_INET6, 2 /* SOCK_DGRAM */ | SOCK_CLOEXEC, 0),
  );
}

/** A listening TCP socket on loopback, and its port */
export function tcpListener(family: Family): { fd: number; port: number } {
  const fd = tcpSocket(family);
  const sa = loopback(family, 0);
  check("bind", c().bind(fd, sa, sa.length));
  check("listen", c().listen(fd, 512));
  const len = new Uint32Array([sa.length]);
  check("getsockname", c().getsockname(fd, sa, new Uint8Array(len.buffer)));
  return { fd, port: new DataView(sa.buffer).getUint16(2, false) };
}

/** `n` established loopback connections: the ends to hand over, and their peers */
export interface Connections {
  readonly local: number[];
  readonly remote: number[];
  close(): void;
}

export function tcpConnections(family: Family, n: number): Connections {
  const listener = tcpListener(family);
  const local: number[] = [];
  const remote: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const fd = tcpSocket(family);
      const sa = loopback(family, listener.port);
      check("connect", c().connect(fd, sa, sa.length));
      local.push(fd);
      remote.push(acceptWithin(listener.fd, 5000));
    }
  } finally {
    closeFd(listener.fd);
  }
  return { local, remote, close: () => closeAll([...local, ...remote]) };
}

/** getsockopt(TCP_REPAIR): the repair state as the sender's copy sees it */
export function repairState(fd: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  check(
    "getsockopt(TCP_REPAIR)",
    c().getsockopt(fd, SOL_TCP, TCP_REPAIR, new Uint8Array(v.buffer), new Uint8Array(len.buffer)),
  );
  return v[0]!;
}

/** setsockopt(TCP_REPAIR) from the test process itself: 0 or -errno */
export function setRepairDirect(fd: number, op: number): number {
  const v = new Int32Array([op]);
  return soft(c().setsockopt(fd, SOL_TCP, TCP_REPAIR, new Uint8Array(v.buffer), 4));
}

/** Whether fd is open in this process */
export function isOpen(fd: number): boolean {
  return c().fcntl(fd, 1, /* F_GETFD */ 0) >= 0;
}

// ---- /proc, read natively: Deno refuses /proc/PID/fd without --allow-all ----

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const O_RDONLY_DIRECTORY_CLOEXEC = 0o2000000 | (Deno.build.arch === "aarch64" ? 0o40000 : 0o200000);

/** Contents of a (small) file such as /proc/PID/syscall, or null if it can't be opened */
export function readSmallFile(path: string): string | null {
  const fd = soft(c().open(encoder.encode(path + "\0"), 0o2000000, 0));
  if (fd < 0) return null;
  try {
    const buf = new Uint8Array(65536);
    let len = 0;
    for (;;) {
      const r = soft(c().read(fd, buf.subarray(len), BigInt(buf.length - len)));
      if (r <= 0) break;
      len += r;
    }
    return decoder.decode(buf.subarray(0, len));
  } finally {
    c().close(fd);
  }
}

/** The "Key: value" lines of a /proc status file, or null if it cannot be read */
export function statusFields(path: string): Map<string, string> | null {
  const text = readSmallFile(path);
  if (text === null) return null;
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/** A process's open descriptors and what they point at (/proc/PID/fd) */
export function processDescriptors(pid: number | `${number}/task/${number}`): Map<number, string> {
  const fds = new Map<number, string>();
  const target = new Uint8Array(4096);
  for (const name of directoryNames(`/proc/${pid}/fd`)) {
    const link = encoder.encode(`/proc/${pid}/fd/${name}\0`);
    const len = soft(c().readlinkat(-100, /* AT_FDCWD */ link, target, BigInt(target.length)));
    if (len >= 0) fds.set(Number(name), decoder.decode(target.subarray(0, len)));
  }
  return fds;
}

// ---- directory mode: entries a fake passt (or an operator) puts in the directory ----

/**
 * A UNIX socket bound as `name` inside `dir`, however long `dir` is: bound by
 * its relative name from within the directory, like the helper connects to it.
 * The test process's working directory is restored before this returns.
 */
export function unixListenerIn(
  dir: string,
  name: string,
  listen = true,
  type = SOCK_STREAM,
): number {
  const back = Deno.cwd();
  Deno.chdir(dir);
  try {
    return unixListener(name, listen, type);
  } finally {
    Deno.chdir(back);
  }
}

/** A FIFO at `path` */
export function makeFifo(path: string): void {
  check("mkfifo", c().mkfifo(encoder.encode(path + "\0"), 0o600));
}

/** Where a process's working directory is (/proc/PID/cwd), or null */
export function processCwd(pid: number): string | null {
  const target = new Uint8Array(4096);
  const link = encoder.encode(`/proc/${pid}/cwd\0`);
  const AT_FDCWD = -100;
  const len = soft(c().readlinkat(AT_FDCWD, link, target, BigInt(target.length)));
  return len < 0 ? null : decoder.decode(target.subarray(0, len));
}

/** Writes `text` to a (small) file such as a /proc/sys setting: Deno wants -A for those */
export function writeSmallFile(path: string, text: string): void {
  const O_WRONLY_CLOEXEC = 0o2000000 | 1;
  const fd = check(`open ${path}`, c().open(encoder.encode(path + "\0"), O_WRONLY_CLOEXEC, 0));
  try {
    const bytes = encoder.encode(text);
    const n = check(`write ${path}`, c().write(fd, bytes, BigInt(bytes.length)));
    if (n !== bytes.length) throw new Error(`short write to ${path}`);
  } finally {
    c().close(fd);
  }
}

// ---- ownership and directory listings of /proc, for the hardening tests ----

/** Owner of a file (statx, without following a final symlink), or null if it can't be seen */
export function fileOwner(path: string): { uid: number; gid: number } | null {
  const buf = new Uint8Array(256);
  const AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, STATX_UID = 0x8, STATX_GID = 0x10;
  const r = soft(
    c().statx(
      AT_FDCWD,
      encoder.encode(path + "\0"),
      AT_SYMLINK_NOFOLLOW,
      STATX_UID | STATX_GID,
      buf,
    ),
  );
  if (r < 0) return null;
  const v = new DataView(buf.buffer);
  // struct statx: stx_uid at 20, stx_gid at 24
  return { uid: v.getUint32(20, true), gid: v.getUint32(24, true) };
}

/** Names in a directory such as /proc/PID/task, without "." and ".." */
export function directoryNames(path: string): string[] {
  const dir = check(
    `open ${path}`,
    c().open(encoder.encode(path + "\0"), O_RDONLY_DIRECTORY_CLOEXEC, 0),
  );
  const names: string[] = [];
  try {
    const buf = new Uint8Array(32768);
    for (;;) {
      const n = check("getdents64", c().getdents64(dir, buf, BigInt(buf.length)));
      if (n === 0) break;
      const v = new DataView(buf.buffer);
      for (let off = 0; off < n;) {
        const reclen = v.getUint16(off + 16, true);
        const name = decoder.decode(buf.subarray(off + 19, buf.indexOf(0, off + 19)));
        off += reclen;
        if (name !== "." && name !== "..") names.push(name);
      }
    }
  } finally {
    c().close(dir);
  }
  return names;
}

// ---- passt's end for the bench and the allocation probe ----
//
// Everything a message needs is made once, so that sending a command and
// reading its reply allocate nothing: neither the bench's timings nor the
// allocation probe's heap figures are disturbed by the fake passt itself.

const MSG_NOSIGNAL_FLAG = 0x4000;
const EAGAIN = 11;

/** passt's side of one connection to a helper, allocation-free per message */
export class PasstEnd {
  readonly fd: number;
  readonly #data = new Uint8Array(1);
  readonly #reply = new Uint8Array(1);
  readonly #control = new Uint8Array(cmsgSpace(253 * 4));
  readonly #controlView = new DataView(this.#control.buffer);
  readonly #iov = new Uint8Array(16);
  readonly #msg = new Uint8Array(56);
  readonly #msgView = new DataView(this.#msg.buffer);
  readonly #controlAddress: bigint;
  readonly #iovAddress: bigint;
  #controlLength = 0;
  #count = 0;

  /** `fd` is the connected socket; replies are awaited at most `replyMs` */
  constructor(fd: number, replyMs = 10000) {
    this.fd = fd;
    const iv = new DataView(this.#iov.buffer);
    iv.setBigUint64(0, address(this.#data), true);
    iv.setBigUint64(8, 1n, true);
    this.#iovAddress = address(this.#iov);
    this.#controlAddress = address(this.#control);
    // SO_RCVTIMEO: a helper that hangs fails the run instead of hanging it
    const tv = new BigInt64Array([
      BigInt(Math.floor(replyMs / 1000)),
      BigInt((replyMs % 1000) * 1000),
    ]);
    check(
      "setsockopt(SO_RCVTIMEO)",
      c().setsockopt(fd, SOL_SOCKET, 20, new Uint8Array(tv.buffer), 16),
    );
  }

  /** Descriptors the next messages carry: `count` of `fds` from `offset` (1..253) */
  load(fds: Int32Array, offset: number, count: number): void {
    if (count < 1 || count > 253 || offset + count > fds.length) {
      throw new Error(`bad batch ${offset}+${count}`);
    }
    const v = this.#controlView;
    // size_t fields written as two 32-bit halves: BigInt() would allocate
    v.setUint32(0, cmsgLen(count * 4), true);
    v.setUint32(4, 0, true);
    v.setInt32(8, SOL_SOCKET, true);
    v.setInt32(12, SCM_RIGHTS, true);
    for (let i = 0; i < count; i++) v.setInt32(16 + 4 * i, fds[offset + i]!, true);
    this.#controlLength = cmsgSpace(count * 4);
    this.#count = count;
  }

  /** How many descriptors the loaded batch holds */
  get count(): number {
    return this.#count;
  }

  /** sendmsg() of the command byte with the loaded batch: 1, or -errno */
  send(command: number): number {
    this.#data[0] = command & 0xff;
    const m = this.#msgView;
    m.setBigUint64(0, 0n, true);
    m.setUint32(8, 0, true);
    m.setBigUint64(16, this.#iovAddress, true);
    m.setBigUint64(24, 1n, true);
    m.setBigUint64(32, this.#controlAddress, true);
    m.setUint32(40, this.#controlLength, true);
    m.setUint32(44, 0, true);
    m.setInt32(48, 0, true);
    const r = c().sendmsg32(this.fd, this.#msg, MSG_NOSIGNAL_FLAG);
    return r < 0 ? -libc.errno() : r;
  }

  /**
   * Blocks for the reply byte: the command as a signed byte (-1..1 for
   * valid ones), or REPLY_EOF, REPLY_TIMEOUT, or another value below -128
   * that is -128 - errno
   */
  awaitReply(): number {
    const r = c().recv32(this.fd, this.#reply, 1n, 0);
    if (r === 1) return (this.#reply[0]! << 24) >> 24;
    if (r === 0) return REPLY_EOF;
    const errno = libc.errno();
    return errno === EAGAIN ? REPLY_TIMEOUT : -128 - errno;
  }
}

/** awaitReply(): the helper closed the connection */
export const REPLY_EOF = -1000;
/** awaitReply(): no reply within the time given to PasstEnd */
export const REPLY_TIMEOUT = -1001;

/** What an awaitReply() result means, for error messages */
export function describeReply(r: number): string {
  if (r === REPLY_EOF) return "the helper closed the connection";
  if (r === REPLY_TIMEOUT) return "no reply in time";
  if (r < -128) return `recv: ${describeErrno(-128 - r)}`;
  return `reply ${r}`;
}

const repairValue = new Int32Array(1);
const repairValueBytes = new Uint8Array(repairValue.buffer);
const repairLength = new Uint32Array(1);
const repairLengthBytes = new Uint8Array(repairLength.buffer);

/** repairState() without allocating: 1, 0, or -errno */
export function repairStateNow(fd: number): number {
  repairLength[0] = 4;
  const r = c().getsockopt(fd, SOL_TCP, TCP_REPAIR, repairValueBytes, repairLengthBytes);
  return r < 0 ? -libc.errno() : repairValue[0]!;
}
