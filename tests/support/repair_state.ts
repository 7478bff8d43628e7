// Reading and restoring the state of a TCP connection in repair mode: the
// native calls of the migration test's "passt" side.
//
// Test tooling only, never imported by the program. The helper stays a pure
// TCP_REPAIR switch: its complete native surface is src/ffi/libc.ts, and none
// of the repair-mode options below belong there. Here they are used by the
// unprivileged process that migrates a connection once the helper has put its
// sockets into repair mode: every option in this file except TCP_REPAIR itself
// works without CAP_NET_ADMIN on a socket that is already in repair mode.
//
// Every number is written down under its kernel name, with the header it
// comes from. The struct layouts are the same on x86_64 and aarch64.

import {
  AF_INET,
  AF_INET6,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
  SOL_TCP,
} from "../../src/abi.ts";
import { LazyLibc, PeerError } from "./test_libc.ts";

// ---- kernel numbers ----

// Socket options (uapi/linux/tcp.h)
/** int: the MSS; before connect() in repair mode it is the one the new socket uses */
export const TCP_MAXSEG = 2;
/** struct tcp_info */
export const TCP_INFO = 11;
/** int: which queue TCP_QUEUE_SEQ, send() and recv(MSG_PEEK) act on in repair mode */
export const TCP_REPAIR_QUEUE = 20;
/** u32: write_seq of the send queue, or rcv_nxt of the receive queue */
export const TCP_QUEUE_SEQ = 21;
/** struct tcp_repair_opt[]: options as if negotiated in the handshake (set only) */
export const TCP_REPAIR_OPTIONS = 22;
/** u32: the current TCP timestamp clock, offset included (opaque; bit 0 = usec mode) */
export const TCP_TIMESTAMP = 24;
/** struct tcp_repair_window */
export const TCP_REPAIR_WINDOW = 29;

// Values of TCP_REPAIR_QUEUE (uapi/linux/tcp.h, enum)
export const TCP_NO_QUEUE = 0;
export const TCP_RECV_QUEUE = 1;
export const TCP_SEND_QUEUE = 2;

// Option codes of struct tcp_repair_opt (include/net/tcp.h, the TCP option kinds)
export const TCPOPT_MSS = 2;
export const TCPOPT_WINDOW = 3;
export const TCPOPT_SACK_PERM = 4;
export const TCPOPT_TIMESTAMP = 8;

// tcp_info.tcpi_options bits (uapi/linux/tcp.h)
export const TCPI_OPT_TIMESTAMPS = 1;
export const TCPI_OPT_SACK = 2;
export const TCPI_OPT_WSCALE = 4;

// ioctl() requests on sockets (uapi/linux/sockios.h, uapi/asm-generic/ioctls.h)
/** SIOCINQ = FIONREAD: bytes in the receive queue */
export const SIOCINQ = 0x541b;
/** SIOCOUTQ = TIOCOUTQ: bytes in the send queue, sent-unacknowledged and unsent */
export const SIOCOUTQ = 0x5411;
/** Bytes in the send queue that were never sent */
export const SIOCOUTQNSD = 0x894b;

// Socket-level options (uapi/asm-generic/socket.h)
export const SO_ERROR = 4;
export const SO_RCVLOWAT = 18;

// send()/recv() flags (include/linux/socket.h)
export const MSG_PEEK = 0x2;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;

// poll() events (uapi/asm-generic/poll.h)
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;

// errno values the migration handles (uapi/asm-generic/errno-base.h, errno.h)
export const EPERM = 1;
export const EINTR = 4;
export const EAGAIN = 11;

// struct tcp_repair_window { u32 snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup; }
export const TCP_REPAIR_WINDOW_SIZE = 20;
// struct tcp_repair_opt { u32 opt_code; u32 opt_val; }
export const TCP_REPAIR_OPT_SIZE = 8;
// struct tcp_info: the fields read here (uapi/linux/tcp.h)
const TCP_INFO_SIZE = 256;
const TCPI_STATE = 0; // u8
const TCPI_OPTIONS = 5; // u8
const TCPI_WSCALE = 6; // u8: tcpi_snd_wscale:4 (low nibble), tcpi_rcv_wscale:4
const TCPI_SND_MSS = 16; // u32
const TCPI_RCV_MSS = 20; // u32
const TCPI_TOTAL_RETRANS = 100; // u32
/** Offsets of u32 fields of struct tcp_info worth printing when something stalls */
const TCPI_DIAGNOSTICS = {
  rto: 8,
  unacked: 24,
  sacked: 28,
  lost: 32,
  retrans: 36,
  sndSsthresh: 76,
  sndCwnd: 80,
  notsentBytes: 144,
  sndWnd: 228,
} as const;

// ---- the native table (test-only) ----

const int = "i32";
const uint = "u32";
const buffer = "buffer";

const SYMBOLS = {
  // int socket(int domain, int type, int protocol)
  socket: { parameters: [int, int, int], result: int },
  // int bind(int fd, const struct sockaddr *addr, socklen_t len)
  bind: { parameters: [int, buffer, uint], result: int },
  // int connect(int fd, const struct sockaddr *addr, socklen_t len)
  connect: { parameters: [int, buffer, uint], result: int },
  // int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
  getsockname: { parameters: [int, buffer, buffer], result: int },
  // int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
  getpeername: { parameters: [int, buffer, buffer], result: int },
  // int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
  setsockopt: { parameters: [int, int, int, buffer, uint], result: int },
  // int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
  getsockopt: { parameters: [int, int, int, buffer, buffer], result: int },
  // int ioctl(int fd, unsigned long request, int *arg)
  ioctl: { parameters: [int, "u64", buffer], result: int },
  // ssize_t send(int fd, const void *buf, size_t len, int flags)
  send: { parameters: [int, buffer, "usize", int], result: "i64" },
  // ssize_t recv(int fd, void *buf, size_t len, int flags)
  recv: { parameters: [int, buffer, "usize", int], result: "i64" },
  // ssize_t read(int fd, void *buf, size_t len)
  read: { parameters: [int, buffer, "usize"], result: "i64" },
  // int shutdown(int fd, int how)
  shutdown: { parameters: [int, int], result: int },
  // int poll(struct pollfd *fds, nfds_t n, int timeout)
  poll: { parameters: [buffer, "u64", int], result: int },
  // int close(int fd)
  close: { parameters: [int], result: int },
  // char *mkdtemp(char *template)
  mkdtemp: { parameters: [buffer], result: "pointer" },
  // int unlink(const char *path)
  unlink: { parameters: [buffer], result: int },
  // int rmdir(const char *path)
  rmdir: { parameters: [buffer], result: int },
  // int *__errno_location(void)
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

const libc = new LazyLibc(SYMBOLS);
const c = () => libc.c;
const check = (call: string, r: number | bigint) => libc.check(call, r);
const soft = (r: number | bigint) => libc.soft(r);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---- socket options and ioctls, typed ----

function setBytes(fd: number, level: number, name: number, what: string, value: Uint8Array): void {
  check(`setsockopt(${what})`, c().setsockopt(fd, level, name, value, value.length));
}

function getBytes(fd: number, level: number, name: number, what: string, size: number): Uint8Array {
  const value = new Uint8Array(size);
  const len = new Uint32Array([size]);
  check(`getsockopt(${what})`, c().getsockopt(fd, level, name, value, new Uint8Array(len.buffer)));
  return value.subarray(0, len[0]!);
}

function setInt(fd: number, level: number, name: number, what: string, v: number): void {
  setBytes(fd, level, name, what, new Uint8Array(new Int32Array([v]).buffer));
}

function getInt(fd: number, level: number, name: number, what: string): number {
  return new DataView(getBytes(fd, level, name, what, 4).buffer).getInt32(0, true);
}

function getUint(fd: number, level: number, name: number, what: string): number {
  return new DataView(getBytes(fd, level, name, what, 4).buffer).getUint32(0, true);
}

function setUint(fd: number, level: number, name: number, what: string, v: number): void {
  setBytes(fd, level, name, what, new Uint8Array(new Uint32Array([v >>> 0]).buffer));
}

function ioctlInt(fd: number, request: number, what: string): number {
  const v = new Int32Array(1);
  check(`ioctl(${what})`, c().ioctl(fd, BigInt(request), new Uint8Array(v.buffer)));
  return v[0]!;
}

/** SIOCINQ: bytes waiting in the receive queue */
export function receiveQueueBytes(fd: number): number {
  return ioctlInt(fd, SIOCINQ, "SIOCINQ");
}

/** SIOCOUTQ: bytes in the send queue, acknowledged or not */
export function sendQueueBytes(fd: number): number {
  return ioctlInt(fd, SIOCOUTQ, "SIOCOUTQ");
}

/** SIOCOUTQNSD: bytes in the send queue that were never sent */
export function notSentBytes(fd: number): number {
  return ioctlInt(fd, SIOCOUTQNSD, "SIOCOUTQNSD");
}

/** TCP_REPAIR_QUEUE: TCP_NO_QUEUE, TCP_RECV_QUEUE or TCP_SEND_QUEUE */
export function selectQueue(fd: number, queue: number): void {
  setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, "TCP_REPAIR_QUEUE", queue);
}

/** TCP_QUEUE_SEQ of the selected queue: write_seq (send) or rcv_nxt (receive) */
export function queueSeq(fd: number): number {
  return getUint(fd, SOL_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ");
}

/** Sets TCP_QUEUE_SEQ of the selected queue: only before connect() */
export function setQueueSeq(fd: number, seq: number): void {
  setUint(fd, SOL_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", seq);
}

/**
 * The whole selected queue, read with MSG_PEEK (repair mode allows nothing
 * else). The kernel copies the send queue in one go and fails if it does not
 * fit, so `room` must be at least the queue's size.
 */
export function peekQueue(fd: number, room: number): Uint8Array {
  const buf = new Uint8Array(Math.max(room, 1));
  const n = soft(c().recv(fd, buf, BigInt(buf.length), MSG_PEEK | MSG_DONTWAIT));
  if (n === -EAGAIN) return new Uint8Array(0);
  if (n < 0) throw new PeerError("recv(MSG_PEEK) in repair mode", -n);
  return buf.subarray(0, n);
}

/**
 * Puts `data` into the selected queue of a socket in repair mode: into the
 * send queue as sent-but-unacknowledged, or into the receive queue as
 * received. Nothing goes on the wire. Throws if the socket takes less than all
 * of it (a send queue larger than the new socket's buffer).
 */
export function fillQueue(fd: number, data: Uint8Array, what: string): void {
  let off = 0;
  while (off < data.length) {
    const rest = data.subarray(off);
    const n = soft(c().send(fd, rest, BigInt(rest.length), MSG_DONTWAIT | MSG_NOSIGNAL));
    if (n < 0) {
      throw new PeerError(`send() into the ${what} queue (${off} of ${data.length} bytes in)`, -n);
    }
    off += n;
  }
}

/**
 * The largest TCP_MAXSEG setsockopt() accepts: MAX_TCP_WINDOW
 * (include/net/tcp.h). Loopback's MSS (65483 on IPv4) is larger.
 */
export const MAX_TCP_WINDOW = 32767;

/** TCP_MAXSEG: in repair mode, the MSS the peer announced (mss_clamp) */
export function maxSegment(fd: number): number {
  return getInt(fd, SOL_TCP, TCP_MAXSEG, "TCP_MAXSEG");
}

/** Sets TCP_MAXSEG, capped to what the kernel accepts; returns the value set */
export function setMaxSegment(fd: number, mss: number): number {
  const value = Math.min(mss, MAX_TCP_WINDOW);
  setInt(fd, SOL_TCP, TCP_MAXSEG, "TCP_MAXSEG", value);
  return value;
}

/** TCP_TIMESTAMP: opaque, restored as read */
export function timestamp(fd: number): number {
  return getUint(fd, SOL_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP");
}

export function setTimestamp(fd: number, ts: number): void {
  setUint(fd, SOL_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP", ts);
}

/** struct tcp_repair_window */
export interface RepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

export function repairWindow(fd: number): RepairWindow {
  const raw = getBytes(fd, SOL_TCP, TCP_REPAIR_WINDOW, "TCP_REPAIR_WINDOW", TCP_REPAIR_WINDOW_SIZE);
  if (raw.length !== TCP_REPAIR_WINDOW_SIZE) {
    throw new Error(`TCP_REPAIR_WINDOW returned ${raw.length} bytes`);
  }
  const v = new DataView(raw.buffer, raw.byteOffset);
  return {
    sndWl1: v.getUint32(0, true),
    sndWnd: v.getUint32(4, true),
    maxWindow: v.getUint32(8, true),
    rcvWnd: v.getUint32(12, true),
    rcvWup: v.getUint32(16, true),
  };
}

/** Sets the window: only after the receive queue is restored (EINVAL before) */
export function setRepairWindow(fd: number, w: RepairWindow): void {
  const raw = new Uint8Array(TCP_REPAIR_WINDOW_SIZE);
  const v = new DataView(raw.buffer);
  [w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup].forEach((x, i) =>
    v.setUint32(4 * i, x, true)
  );
  setBytes(fd, SOL_TCP, TCP_REPAIR_WINDOW, "TCP_REPAIR_WINDOW", raw);
}

/** What the handshake negotiated, from struct tcp_info */
export interface TcpInfo {
  state: number;
  timestamps: boolean;
  sack: boolean;
  windowScaling: boolean;
  sndWscale: number;
  rcvWscale: number;
  sndMss: number;
  rcvMss: number;
  totalRetrans: number;
}

export function tcpInfo(fd: number): TcpInfo {
  const raw = getBytes(fd, SOL_TCP, TCP_INFO, "TCP_INFO", TCP_INFO_SIZE);
  const v = new DataView(raw.buffer, raw.byteOffset);
  const options = raw[TCPI_OPTIONS]!;
  return {
    state: raw[TCPI_STATE]!,
    timestamps: (options & TCPI_OPT_TIMESTAMPS) !== 0,
    sack: (options & TCPI_OPT_SACK) !== 0,
    windowScaling: (options & TCPI_OPT_WSCALE) !== 0,
    sndWscale: raw[TCPI_WSCALE]! & 0xf,
    rcvWscale: raw[TCPI_WSCALE]! >> 4,
    sndMss: v.getUint32(TCPI_SND_MSS, true),
    rcvMss: v.getUint32(TCPI_RCV_MSS, true),
    totalRetrans: v.getUint32(TCPI_TOTAL_RETRANS, true),
  };
}

/** struct tcp_info in numbers, for a report when a transfer stalls */
export function tcpDiagnostics(fd: number): Record<string, number> {
  const raw = getBytes(fd, SOL_TCP, TCP_INFO, "TCP_INFO", TCP_INFO_SIZE);
  const v = new DataView(raw.buffer, raw.byteOffset);
  const out: Record<string, number> = {
    state: raw[TCPI_STATE]!,
    caState: raw[1]!,
    retransmits: raw[2]!,
    probes: raw[3]!,
    backoff: raw[4]!,
  };
  for (const [name, off] of Object.entries(TCPI_DIAGNOSTICS)) {
    if (off + 4 <= raw.length) out[name] = v.getUint32(off, true);
  }
  out.totalRetrans = v.getUint32(TCPI_TOTAL_RETRANS, true);
  return out;
}

/** The TCP_REPAIR_OPTIONS entries that give a new socket the old one's handshake */
export function repairOptionsFor(info: TcpInfo, mss: number): Array<[code: number, value: number]> {
  const opts: Array<[number, number]> = [[TCPOPT_MSS, mss]];
  // opt_val: snd_wscale in the low 16 bits, rcv_wscale in the high 16
  if (info.windowScaling) opts.push([TCPOPT_WINDOW, info.sndWscale | (info.rcvWscale << 16)]);
  if (info.sack) opts.push([TCPOPT_SACK_PERM, 0]);
  if (info.timestamps) opts.push([TCPOPT_TIMESTAMP, 0]);
  return opts;
}

/** TCP_REPAIR_OPTIONS: only once connected (EPERM before) */
export function setRepairOptions(fd: number, opts: ReadonlyArray<[number, number]>): void {
  const raw = new Uint8Array(opts.length * TCP_REPAIR_OPT_SIZE);
  const v = new DataView(raw.buffer);
  opts.forEach(([code, value], i) => {
    v.setUint32(i * TCP_REPAIR_OPT_SIZE, code, true);
    v.setUint32(i * TCP_REPAIR_OPT_SIZE + 4, value >>> 0, true);
  });
  setBytes(fd, SOL_TCP, TCP_REPAIR_OPTIONS, "TCP_REPAIR_OPTIONS", raw);
}

/** SO_RCVLOWAT: poll() reports POLLIN only once this many bytes are queued */
export function setReceiveLowWater(fd: number, bytes: number): void {
  setInt(fd, SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT", bytes);
}

/** SO_ERROR: the pending error of a socket, 0 if none (reading clears it) */
export function socketError(fd: number): number {
  return getInt(fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
}

// ---- addresses ----

export type Family = 4 | 6;

/** sockaddr_in(6) of the loopback address at `port` */
export function loopbackAddress(family: Family, port: number): Uint8Array {
  const sa = new Uint8Array(family === 4 ? 16 : 28);
  const v = new DataView(sa.buffer);
  v.setUint16(0, family === 4 ? AF_INET : AF_INET6, true);
  v.setUint16(2, port, false);
  if (family === 4) sa.set([127, 0, 0, 1], 4);
  else sa[23] = 1; // ::1
  return sa;
}

function name(call: "getsockname" | "getpeername", fd: number): Uint8Array {
  const sa = new Uint8Array(128);
  const len = new Uint32Array([sa.length]);
  check(call, c()[call](fd, sa, new Uint8Array(len.buffer)));
  return sa.slice(0, len[0]!);
}

/** The local address of a socket, as a sockaddr */
export function localAddress(fd: number): Uint8Array {
  return name("getsockname", fd);
}

/** The peer address of a connected socket, as a sockaddr */
export function peerAddress(fd: number): Uint8Array {
  return name("getpeername", fd);
}

/** "127.0.0.1:40000" or "[::1]:40000" */
export function formatAddress(sa: Uint8Array): string {
  const v = new DataView(sa.buffer, sa.byteOffset);
  const port = v.getUint16(2, false);
  if (v.getUint16(0, true) === AF_INET) return `${sa.subarray(4, 8).join(".")}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(v.getUint16(8 + 2 * i, false).toString(16));
  // compress the longest run of zero groups, as inet_ntop does
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const text = bestLen > 1
    ? `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`
    : groups.join(":");
  return `[${text}]:${port}`;
}

// ---- sockets ----

export function newTcpSocket(family: Family): number {
  return check(
    "socket",
    c().socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0),
  );
}

/** bind(): 0 or -errno */
export function bindTo(fd: number, sa: Uint8Array): number {
  return soft(c().bind(fd, sa, sa.length));
}

/** connect(): 0 or -errno */
export function connectTo(fd: number, sa: Uint8Array): number {
  return soft(c().connect(fd, sa, sa.length));
}

export function closeSocket(fd: number): number {
  return soft(c().close(fd));
}

/** shutdown(SHUT_WR): send our FIN */
export function shutdownWrite(fd: number): void {
  check("shutdown", c().shutdown(fd, 1));
}

// ---- plain I/O for the migration's processes ----

/** poll() on several descriptors: the revents of each, in order; [] on timeout */
export function pollMany(fds: ReadonlyArray<[fd: number, events: number]>, ms: number): number[] {
  const pfds = new Uint8Array(8 * fds.length);
  const v = new DataView(pfds.buffer);
  fds.forEach(([fd, events], i) => {
    v.setInt32(8 * i, fd, true);
    v.setInt16(8 * i + 4, events, true);
  });
  const r = soft(c().poll(pfds, BigInt(fds.length), ms));
  if (r === -EINTR || r === 0) return [];
  if (r < 0) throw new PeerError("poll", -r);
  return fds.map((_, i) => v.getInt16(8 * i + 6, true));
}

/** read(): bytes read, 0 at EOF, or -errno */
export function readInto(fd: number, buf: Uint8Array): number {
  return soft(c().read(fd, buf, BigInt(buf.length)));
}

/** send() without waiting: bytes taken, or -errno */
export function sendNow(fd: number, data: Uint8Array): number {
  return soft(c().send(fd, data, BigInt(data.length), MSG_DONTWAIT | MSG_NOSIGNAL));
}

/** recv() without waiting: bytes read, 0 at EOF, or -errno */
export function receiveNow(fd: number, buf: Uint8Array): number {
  return soft(c().recv(fd, buf, BigInt(buf.length), MSG_DONTWAIT));
}

// ---- a private directory for the repair socket ----

/** mkdtemp(3) under `parent`: a new directory only we can enter */
export function makePrivateDirectory(parent: string, prefix: string): string {
  const template = encoder.encode(`${parent}/${prefix}XXXXXX\0`);
  if (c().mkdtemp(template) === null) throw new PeerError("mkdtemp", libc.errno());
  return decoder.decode(template.subarray(0, template.length - 1));
}

/** unlink() a file, ignoring a missing one */
export function removeFile(path: string): void {
  c().unlink(encoder.encode(path + "\0"));
}

/** rmdir() an empty directory, ignoring failure */
export function removeDirectory(path: string): void {
  c().rmdir(encoder.encode(path + "\0"));
}
