// A classic-BPF interpreter for seccomp programs, written from the kernel's
// documented semantics (Documentation/networking/filter.rst), so that the
// unit tests can ask the filter for its verdict on any system call without
// installing it. It knows only the instructions a seccomp filter built by
// src/seccomp.ts may use, and rejects anything else: an unknown opcode, a
// jump out of the program, a path that runs off its end.

import assert from "node:assert/strict";
import { BPF_MAXINSNS } from "../../src/seccomp.ts";

/** The input of a seccomp filter: struct seccomp_data */
export interface SeccompData {
  nr: number;
  arch: number;
  instructionPointer?: bigint;
  args?: readonly bigint[];
}

function seccompData(data: SeccompData): DataView {
  const view = new DataView(new ArrayBuffer(64));
  view.setInt32(0, data.nr, true);
  view.setUint32(4, data.arch >>> 0, true);
  view.setBigUint64(8, data.instructionPointer ?? 0n, true);
  (data.args ?? []).forEach((a, i) => view.setBigUint64(16 + 8 * i, BigInt.asUintN(64, a), true));
  return view;
}

/** Decoded instructions: [code, jt, jf, k] */
export function decode(program: Uint8Array): [number, number, number, number][] {
  if (program.byteLength % 8 !== 0) throw new Error(`program of ${program.byteLength} bytes`);
  const view = new DataView(program.buffer, program.byteOffset, program.byteLength);
  const out: [number, number, number, number][] = [];
  for (let off = 0; off < program.byteLength; off += 8) {
    out.push([
      view.getUint16(off, true),
      view.getUint8(off + 2),
      view.getUint8(off + 3),
      view.getUint32(off + 4, true),
    ]);
  }
  return out;
}

/**
 * Asserts what the kernel asks of a seccomp program before it installs one:
 * `length` instructions, 1 to BPF_MAXINSNS of them, every jump inside it,
 * a return last; and that it starts by loading the audit architecture
 */
export function assertWellFormed(program: Uint8Array, length: number): void {
  const insns = decode(program);
  assert.equal(insns.length, length);
  assert.ok(insns.length > 0 && insns.length <= BPF_MAXINSNS);
  insns.forEach(([code, jt, jf], pc) => {
    if ((code & 0x07) === 0x05) {
      assert.ok(pc + 1 + Math.max(jt, jf) < insns.length, `jump at ${pc} stays inside`);
    }
  });
  assert.equal(insns.at(-1)![0], 0x06, "ends with a return");
  // The first thing it does is look at the architecture
  assert.deepEqual(insns[0], [0x20, 0, 0, 4]);
}

/** Runs the program on `data`; returns the 32-bit action value */
export function runFilter(program: Uint8Array, data: SeccompData): number {
  const insns = decode(program);
  const input = seccompData(data);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps <= insns.length; steps++) {
    const insn = insns[pc];
    if (insn === undefined) throw new Error(`ran off the program at ${pc}`);
    const [code, jt, jf, k] = insn;
    switch (code) {
      case 0x20: // BPF_LD | BPF_W | BPF_ABS
        if (k % 4 !== 0 || k + 4 > 64) throw new Error(`bad load offset ${k} at ${pc}`);
        a = input.getUint32(k, true);
        pc++;
        break;
      case 0x54: // BPF_ALU | BPF_AND | BPF_K
        a = (a & k) >>> 0;
        pc++;
        break;
      case 0x15: // BPF_JMP | BPF_JEQ | BPF_K
        pc += 1 + (a === k ? jt : jf);
        break;
      case 0x35: // BPF_JMP | BPF_JGE | BPF_K
        pc += 1 + (a >= k ? jt : jf);
        break;
      case 0x45: // BPF_JMP | BPF_JSET | BPF_K
        pc += 1 + ((a & k) !== 0 ? jt : jf);
        break;
      case 0x06: // BPF_RET | BPF_K
        return k;
      default:
        throw new Error(`unexpected opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error("program did not return");
}
