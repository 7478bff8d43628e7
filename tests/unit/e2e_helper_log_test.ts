import assert from "node:assert/strict";
import { parseHelperLog, parseStraceTampering } from "../e2e/helper_log.ts";
import { unit } from "./_unit.ts";

// As main.ts prints them with --verbose (trimmed from real runs)
const ROOT =
  `hardened: not dumpable, no_new_privs, seccomp filter (x86_64, 116 instructions) refusing 43 system calls; ffi permission revoked
input hold: on; one eBPF socket filter loaded, attached to each socket while it is in repair mode
connected to /tmp/x/p0/passt.socket.repair (peer pid 30190, uid 65534, gid 65534)
ON for 253 sockets in 1291 µs
ON for 47 sockets in 313 µs
OFF for 1 socket in 213 µs
peer closed the connection after 3 commands
`;

unit("parseHelperLog() reads the eBPF hold, each command and how many there were", () => {
  const log = parseHelperLog(ROOT);
  assert.equal(log.hold, "ebpf");
  assert.deepEqual(log.commands, [
    { name: "ON", sockets: 253 },
    { name: "ON", sockets: 47 },
    { name: "OFF", sockets: 1 },
  ]);
  assert.equal(log.endedAfter, 3);
});

unit("parseHelperLog() tells the classic hold, the hold off, and the hold unavailable", () => {
  assert.equal(
    parseHelperLog(
      "input hold: on; a classic socket filter attached to each socket while it is in repair " +
        "mode (loading an eBPF program was refused: EPERM; as root or with CAP_BPF the hold costs less)\n",
    ).hold,
    "classic",
  );
  assert.equal(parseHelperLog("input hold: off (--no-hold)\n").hold, "off");
  assert.equal(
    parseHelperLog(
      "passt-repair: warning: input hold unavailable, serving without it: SO_COOKIE: ENOPROTOOPT\n",
    ).hold,
    "unavailable",
  );
  const none = parseHelperLog("connected to x\nOFF_NO_WP for 2 sockets in 5 µs\n");
  assert.equal(none.hold, null, "a helper without --verbose says nothing of its hold");
  assert.deepEqual(none.commands, [{ name: "OFF_NO_WP", sockets: 2 }]);
  assert.equal(none.endedAfter, null);
  assert.equal(parseHelperLog("peer reset the connection after 1 command\n").endedAfter, 1);
});

unit("parseStraceTampering() lists the delayed and failed calls, an ioctl by its request", () => {
  const t = parseStraceTampering(
    "ioctl(8, TIOCOUTQ, [0])                 = 0\n" +
      "ioctl(8, SIOCOUTQNSD, [0])              = 0\n" +
      "ioctl(8, FIONREAD, [200])               = 0 (DELAYED)\n" +
      "12345 ioctl(9, FIONREAD, [0])           = 0 (DELAYED)\n" +
      'write(40, "\\2\\1\\0"..., 112)             = -1 EPIPE (Broken pipe) (INJECTED)\n' +
      'write(2, "a", 1)                        = 1 (DELAYED)\n' +
      "+++ killed by SIGSYS +++\n",
  );
  assert.deepEqual(t.delayed, ["ioctl FIONREAD", "ioctl FIONREAD", "write"]);
  assert.deepEqual(t.injected, ["write EPIPE"]);
  assert.deepEqual(parseStraceTampering(""), { delayed: [], injected: [] });
});
