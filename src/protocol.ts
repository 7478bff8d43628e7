// Protocol framing: what one message from passt means.
//
// A message is one data byte (the command, a signed char) with one SCM_RIGHTS
// control message carrying 1..SCM_MAX_FD descriptors. Everything here works on
// plain buffers, allocates nothing on the success path, and is unit-tested
// without permissions.

import {
  CMSG_HDR_SIZE,
  CMSG_LEN_OFF,
  CMSG_LEVEL_OFF,
  CMSG_TYPE_OFF,
  cmsgAlign,
  MSG_CTRUNC,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
  TCP_REPAIR_OFF,
  TCP_REPAIR_OFF_NO_WP,
  TCP_REPAIR_ON,
} from "./abi.ts";
import { ProtocolError } from "./errors.ts";

/** Upstream's wording, kept so that log searches still match */
export const BAD_ANCILLARY = "No/bad ancillary data from peer";

/** Why a message's control data was rejected; OK when it was not */
export const Problem = {
  OK: 0,
  NONE: 1,
  TRUNCATED: 2,
  NOT_RIGHTS: 3,
  SEVERAL: 4,
  EMPTY: 5,
  TOO_MANY: 6,
  MALFORMED: 7,
} as const;
export type Problem = typeof Problem[keyof typeof Problem];

const PROBLEM_TEXT: Record<Problem, string> = {
  [Problem.OK]: "",
  [Problem.NONE]: "no control data",
  [Problem.TRUNCATED]:
    "control data truncated by the kernel (MSG_CTRUNC): descriptors were dropped, is RLIMIT_NOFILE too low?",
  [Problem.NOT_RIGHTS]: "control message is not SCM_RIGHTS",
  [Problem.SEVERAL]: "more than one control message",
  [Problem.EMPTY]: "SCM_RIGHTS without descriptors",
  [Problem.TOO_MANY]: `more than ${SCM_MAX_FD} descriptors`,
  [Problem.MALFORMED]: "malformed control message",
};

/** The one-line error for a rejected message */
export function ancillaryError(problem: Problem): ProtocolError {
  return new ProtocolError(`${BAD_ANCILLARY}: ${PROBLEM_TEXT[problem]}`);
}

/**
 * Walks the control data the kernel returned (`length` bytes of `control`),
 * like CMSG_FIRSTHDR/CMSG_NXTHDR. Every descriptor found in any SCM_RIGHTS
 * message is stored in `fds` (so that the caller can close them all, whatever
 * the verdict), and their number in `found[0]`.
 *
 * Returns Problem.OK when the message holds exactly one well-formed SCM_RIGHTS
 * with 1..SCM_MAX_FD descriptors at level SOL_SOCKET, else the reason.
 * `flags` is msg_flags: MSG_CTRUNC means the kernel dropped descriptors.
 */
export function parseRights(
  control: DataView,
  length: number,
  flags: number,
  fds: Int32Array,
  found: Int32Array,
): Problem {
  found[0] = 0;
  let count = 0;
  let messages = 0;
  let problem: Problem = Problem.OK;
  const end = Math.min(length, control.byteLength);
  let off = 0;
  while (off + CMSG_HDR_SIZE <= end) {
    // cmsg_len is a size_t; only its low 32 bits can be meaningful here
    const hi = control.getUint32(off + CMSG_LEN_OFF + 4, true);
    const len = hi !== 0 ? Infinity : control.getUint32(off + CMSG_LEN_OFF, true);
    if (len < CMSG_HDR_SIZE || off + len > end) {
      if (problem === Problem.OK) problem = Problem.MALFORMED;
      break;
    }
    messages++;
    const level = control.getInt32(off + CMSG_LEVEL_OFF, true);
    const type = control.getInt32(off + CMSG_TYPE_OFF, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const payload = len - CMSG_HDR_SIZE;
      const n = payload >>> 2;
      for (let i = 0; i < n && count < fds.length; i++) {
        fds[count++] = control.getInt32(off + CMSG_HDR_SIZE + 4 * i, true);
      }
      if (problem === Problem.OK) {
        if (payload % 4 !== 0) problem = Problem.MALFORMED;
        else if (n === 0) problem = Problem.EMPTY;
        else if (n > SCM_MAX_FD) problem = Problem.TOO_MANY;
      }
    } else if (problem === Problem.OK) {
      problem = Problem.NOT_RIGHTS;
    }
    off += cmsgAlign(len);
  }
  found[0] = count;
  // Truncation first: it explains any other oddity, and it is the one an
  // operator can fix (raise the descriptor limit).
  if ((flags & MSG_CTRUNC) !== 0) return Problem.TRUNCATED;
  if (problem !== Problem.OK) return problem;
  if (messages === 0) return Problem.NONE;
  if (messages > 1) return Problem.SEVERAL;
  return Problem.OK;
}

/** The data byte as the signed char passt sent */
export function commandOf(byte: number): number {
  return (byte << 24) >> 24;
}

/** Whether a (signed) command is one we carry out */
export function isCommand(cmd: number): boolean {
  return cmd === TCP_REPAIR_ON || cmd === TCP_REPAIR_OFF ||
    cmd === TCP_REPAIR_OFF_NO_WP;
}

/** "ON", "OFF", "OFF_NO_WP" for logs */
export function commandName(cmd: number): string {
  switch (cmd) {
    case TCP_REPAIR_ON:
      return "ON";
    case TCP_REPAIR_OFF:
      return "OFF";
    case TCP_REPAIR_OFF_NO_WP:
      return "OFF_NO_WP";
    default:
      return `${cmd}`;
  }
}

/** Upstream's wording plus the value in decimal and as the byte seen */
export function unsupportedCommand(byte: number): ProtocolError {
  const hex = (byte & 0xff).toString(16).padStart(2, "0");
  return new ProtocolError(
    `Unsupported command ${commandOf(byte)} (byte 0x${hex}) from peer`,
  );
}
