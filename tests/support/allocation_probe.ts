// Measures what the helper's steady-state loop allocates on the JS heap.
//
// Run by tests/system/allocation_test.ts as its own process, so that nothing
// else shares the heap:
//   deno run --allow-ffi --v8-flags=--expose-gc,--min-semi-space-size=16 \
//     tests/support/allocation_probe.ts [--leak]
//
// It drives the program's own RepairSession over the program's own Channel
// (src/ffi/libc.ts), exactly as main.ts does, with an allocation-free fake
// passt (PasstEnd) on the other end of a socketpair and real TCP sockets, in
// batches of 1, 16 and 253. After a warm-up (so that the JIT has settled) it
// collects garbage, runs the same loop again and measures how much the heap
// grew. With no garbage collection in between (the young generation is made
// big enough), any object made per message shows up as growth: windows of two
// lengths separate the cost per message from one-off growth. Prints JSON. --leak adds one BigInt per message (what reading
// msg_controllen with getBigUint64 would cost), to prove that the probe sees
// even that.

import { TCP_REPAIR_OFF_NO_WP, TCP_REPAIR_ON } from "../../src/abi.ts";
import { Channel, DropFilter, openLibc } from "../../src/ffi/libc.ts";
import type { HoldKind } from "../../src/hold.ts";
import { type RepairNative, RepairSession } from "../../src/repair.ts";
import { closeFd, PasstEnd, repairStateNow, tcpConnections, unixPair } from "./peer_native.ts";

const leak = Deno.args.includes("--leak");
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");

/** A RepairNative that makes one small object per message, for calibration */
class LeakyNative implements RepairNative {
  last = 0n;
  constructor(readonly inner: Channel) {}
  get data(): Uint8Array {
    return this.inner.data;
  }
  get control(): DataView {
    return this.inner.control;
  }
  receive(): number {
    return this.inner.receive();
  }
  controlLength(): number {
    this.last = BigInt(this.inner.controlLength());
    return Number(this.last);
  }
  messageFlags(): number {
    return this.inner.messageFlags();
  }
  setTcpRepair(fd: number, op: number): number {
    return this.inner.setTcpRepair(fd, op);
  }
  reply(byte: number): number {
    return this.inner.reply(byte);
  }
  close(fd: number): void {
    this.inner.close(fd);
  }
  closeRange(first: number, last: number): number {
    return this.inner.closeRange(first, last);
  }
  get holdKind(): HoldKind {
    return this.inner.holdKind;
  }
  filterLength(fd: number): number {
    return this.inner.filterLength(fd);
  }
  socketCookie(fd: number): number {
    return this.inner.socketCookie(fd);
  }
  attachHold(fd: number): number {
    return this.inner.attachHold(fd);
  }
  detachHold(fd: number): number {
    return this.inner.detachHold(fd);
  }
}

openLibc();
// With the input hold, as the program runs by default: every ON attaches a
// filter, every OFF_NO_WP detaches it, and the books follow
const channel = new Channel(new DropFilter(Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"));
const [passtFd, helperFd] = unixPair();
channel.attach(helperFd);
const session = new RepairSession(leak ? new LeakyNative(channel) : channel, { hold: true });
const passt = new PasstEnd(passtFd);
const tcp = tcpConnections(4, 127);
const pool = new Int32Array([...tcp.local, ...tcp.remote].slice(0, 253));
const SIZES = new Int32Array([1, 1, 1, 1, 16, 1, 1, 1, 1, 253]);

// Which sockets of the pool are in repair mode, so held: the session's books
// must count exactly these
const inRepair = new Uint8Array(pool.length);
let held = 0;

/** Sends `messages` commands through the session; returns how many failed */
function run(messages: number): number {
  let failures = 0;
  for (let i = 0; i < messages; i++) {
    const n = SIZES[i % SIZES.length]!;
    const cmd = (i & 1) === 0 ? TCP_REPAIR_ON : TCP_REPAIR_OFF_NO_WP;
    passt.load(pool, 0, n);
    if (passt.send(cmd) !== 1) failures++;
    if (session.step() !== null) failures++;
    if (passt.awaitReply() !== cmd) failures++;
    if (repairStateNow(pool[n - 1]!) !== (cmd === TCP_REPAIR_ON ? 1 : 0)) failures++;
    const state = cmd === TCP_REPAIR_ON ? 1 : 0;
    for (let k = 0; k < n; k++) {
      held += state - inRepair[k]!;
      inRepair[k] = state;
    }
    if (!leak && session.held !== held) failures++;
  }
  return failures;
}

/** Heap growth over `messages` messages, starting from a collected heap */
function growth(messages: number): number {
  gc!();
  const before = Deno.memoryUsage().heapUsed;
  failures += run(messages);
  return Deno.memoryUsage().heapUsed - before;
}

// A one-off of a few KiB (the heap statistics themselves, and now and then
// the JIT finishing a compilation) shows up in some windows; what grows with
// the number of messages is what a message costs. So: the least growth seen
// over windows of each length, and the slope between the two lengths.
const WARM_UP = 10000;
const SHORT = 2000;
const LONG = 20000;
const WINDOWS = 2;
let failures = run(WARM_UP);
let short = Infinity;
let long = Infinity;
for (let w = 0; w < WINDOWS; w++) {
  short = Math.min(short, growth(SHORT));
  long = Math.min(long, growth(LONG));
}

closeFd(passtFd);
closeFd(helperFd);
tcp.close();
console.log(JSON.stringify({
  leak,
  commands: session.commands,
  failures,
  windows: { [SHORT]: short, [LONG]: long },
  bytesPerMessage: (long - short) / (LONG - SHORT),
}));
