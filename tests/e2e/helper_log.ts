// Reading what a helper and strace printed during one migration: our
// helper's --verbose stderr (which input hold it used, the commands it
// carried out) and strace's output (which system calls it delayed or made
// fail). Pure (a string in, values out) so that tests/unit checks it with no
// permission.
//
// Our helper's lines, as main.ts prints them with --verbose:
//
//   input hold: on; one eBPF socket filter loaded, attached to each socket ...
//   input hold: on; a classic socket filter attached to each socket while ...
//   input hold: off (--no-hold)
//   ON for 253 sockets in 1234 µs
//   OFF for 1 socket in 56 µs
//   peer closed the connection after 2 commands
//
// strace's, with -e inject (strace(1), "Tampering"):
//
//   ioctl(8, FIONREAD, [200])               = 0 (DELAYED)
//   write(40, "\2\1\0"..., 112)             = -1 EPIPE (Broken pipe) (INJECTED)

/** How the helper said it holds a socket's input while in repair mode */
export type HoldMechanism = "ebpf" | "classic" | "off" | "unavailable";

export interface HelperCommand {
  /** "ON", "OFF", "OFF_NO_WP" */
  name: string;
  sockets: number;
}

export interface HelperLog {
  /** From the "input hold:" line (or the warning that it is unavailable); null if none */
  hold: HoldMechanism | null;
  /** Every command, in order */
  commands: HelperCommand[];
  /** "peer closed (or reset) the connection after N commands": N, or null */
  endedAfter: number | null;
}

/** Reads one helper's --verbose stderr */
export function parseHelperLog(text: string): HelperLog {
  const log: HelperLog = { hold: null, commands: [], endedAfter: null };
  for (const line of text.split("\n")) {
    let g: RegExpExecArray | null;
    if (line.startsWith("input hold: off")) log.hold = "off";
    else if (line.startsWith("input hold: on; one eBPF")) log.hold = "ebpf";
    else if (line.startsWith("input hold: on; a classic")) log.hold = "classic";
    else if (line.includes("input hold unavailable")) log.hold = "unavailable";
    else if ((g = /^([A-Z_]+) for (\d+) sockets? in \d+ µs$/.exec(line))) {
      log.commands.push({ name: g[1]!, sockets: Number(g[2]) });
    } else if ((g = /^peer (?:closed|reset) the connection after (\d+) commands?$/.exec(line))) {
      log.endedAfter = Number(g[1]);
    }
  }
  return log;
}

export interface StraceTampering {
  /** Calls strace delayed: "ioctl FIONREAD", "write" (the name, and an ioctl's request) */
  delayed: string[];
  /** Calls strace made fail, as "write EPIPE" */
  injected: string[];
}

/** Reads strace's -o output for the calls it tampered with */
export function parseStraceTampering(text: string): StraceTampering {
  const result: StraceTampering = { delayed: [], injected: [] };
  for (const line of text.split("\n")) {
    const call = /^(?:\d+ +)?([a-z_0-9]+)\((\d+), ([A-Z_0-9]+)?/.exec(line);
    if (!call) continue;
    const name = call[1] === "ioctl" && call[3] ? `ioctl ${call[3]}` : call[1]!;
    if (line.endsWith("(DELAYED)")) result.delayed.push(name);
    else if (line.endsWith("(INJECTED)")) {
      const errno = / = -1 ([A-Z0-9]+) /.exec(line);
      result.injected.push(errno ? `${name} ${errno[1]}` : name);
    }
  }
  return result;
}
