// The "passt" end of the migrated connection: it holds the connection, writes
// its known byte sequence and checks every byte it receives, and when told to,
// moves the connection to a brand-new socket (migrate.ts). It runs WITHOUT
// CAP_NET_ADMIN: it listens on a UNIX socket for the helper, which connects to
// it and does every TCP_REPAIR switch, as passt's --repair-path works.
//
// Usage: deno run --allow-ffi passt.ts 4|6 PORT
// First line on stdout: {"ok":true,"socket":PATH,...}; then one command per
// stdin line (see peer.ts), plus:
//   try-repair         setsockopt(TCP_REPAIR) by ourselves: the negative control
//   accept-helper MS   take the helper's connection on our repair socket
//   wait-queued N MS   wait until N unread bytes sit in our receive queue
//   migrate [SETTLE_MS]
//                      write what the socket takes, then move the connection
//                      to a new socket, letting the peer's pending ACK land
//                      before the hand-over (migrate.ts, settle())
//   close-helper       close the helper's connection (the helper then exits 0)

import { TCP_REPAIR_ON } from "../../../src/abi.ts";
import { describeErrno, errnoName } from "../../../src/errors.ts";
import {
  acceptWithin,
  closeFd,
  repairState,
  setRepairDirect,
  unixListener,
  waitFor,
} from "../peer_native.ts";
import {
  connectTo,
  type Family,
  formatAddress,
  localAddress,
  loopbackAddress,
  makePrivateDirectory,
  newTcpSocket,
  peerAddress,
  receiveQueueBytes,
  removeDirectory,
  removeFile,
  setReceiveLowWater,
} from "../repair_state.ts";
import { migrateConnection } from "./migrate.ts";
import { deadlineFrom, runRole, say, StreamEnd, wholeNumber } from "./peer.ts";
import { streamBytes } from "./stream.ts";

const PARENT = "/tmp";

runRole(() => {
  const family = Number(Deno.args[0]) as Family;
  const port = Number(Deno.args[1]);
  if ((family !== 4 && family !== 6) || !(port > 0 && port < 65536)) {
    throw new Error("usage: passt.ts 4|6 PORT");
  }
  const dir = makePrivateDirectory(PARENT, "passt-migration-");
  const socketPath = `${dir}/passt.socket.repair`;
  let listener = -1;
  let helper = -1;
  const end = new StreamEnd("to-remote", "to-passt");
  try {
    listener = unixListener(socketPath);
    end.fd = newTcpSocket(family);
    const r = connectTo(end.fd, loopbackAddress(family, port));
    if (r < 0) throw new Error(`connect to port ${port}: ${describeErrno(-r)}`);

    end.commands.set("try-repair", () => {
      const result = setRepairDirect(end.fd, TCP_REPAIR_ON);
      return {
        ok: true,
        errno: -result,
        errnoName: result === 0 ? null : errnoName(-result),
        repair: repairState(end.fd),
      };
    });
    end.commands.set("accept-helper", ([ms]) => {
      helper = acceptWithin(listener, Math.max(0, deadlineFrom(ms) - performance.now()));
      closeFd(listener);
      listener = -1;
      removeFile(socketPath);
      return { ok: true };
    });
    end.commands.set("wait-queued", ([n, ms]) => {
      // SO_RCVLOWAT makes poll() report POLLIN only once n bytes are queued
      const want = wholeNumber(n, "byte count");
      setReceiveLowWater(end.fd, want);
      const ready = waitFor(end.fd, Math.max(0, deadlineFrom(ms) - performance.now()));
      setReceiveLowWater(end.fd, 1);
      const queued = receiveQueueBytes(end.fd);
      if (!ready || queued < want) {
        return { ok: false, error: `${queued} bytes queued, expected ${want}`, queued };
      }
      return { ok: true, queued };
    });
    end.commands.set("migrate", ([settleMs]) => {
      if (helper < 0) throw new Error("no helper connected");
      // Our last writes, right before: what the remote has not acknowledged
      // yet is only what its delayed ACK (40 ms) does not cover
      const full = end.fillUp();
      const old = end.fd;
      end.fd = -1;
      const moved = migrateConnection(old, helper, family, {
        settleMs: settleMs === undefined ? 0 : wholeNumber(settleMs, "settle time (ms)"),
      });
      end.fd = moved.fd;
      end.carry = moved.unsent;
      // What the old socket held must be the end of what we wrote, byte for byte
      const queue = moved.sendQueue;
      const expected = streamBytes(
        end.source.direction,
        end.source.produced - queue.length,
        queue.length,
      );
      const carriedIntact = queue.every((x, i) => x === expected[i]);
      return { ok: true, report: moved.report, carriedIntact, full };
    });
    end.commands.set("close-helper", () => {
      closeFd(helper);
      helper = -1;
      return { ok: true };
    });

    say({
      ok: true,
      socket: socketPath,
      local: formatAddress(localAddress(end.fd)),
      peer: formatAddress(peerAddress(end.fd)),
      pid: Deno.pid,
    });
    end.run();
  } finally {
    if (helper >= 0) closeFd(helper);
    if (listener >= 0) closeFd(listener);
    removeFile(socketPath);
    removeDirectory(dir);
  }
});
