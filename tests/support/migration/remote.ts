// The "remote" end of the migrated connection: a process on the other side of
// a loopback TCP connection that writes its known byte sequence and checks
// every byte it receives. It never learns that the other end moved.
//
// Usage: deno run --allow-ffi remote.ts 4|6
// First line on stdout: {"ok":true,"port":N}; then one command per stdin line
// (see peer.ts), plus "accept MS" to take the connection from passt.

import { acceptWithin, closeFd, tcpListener } from "../peer_native.ts";
import { deadlineFrom, runRole, say, StreamEnd } from "./peer.ts";
import { type Family, formatAddress, localAddress, peerAddress } from "../repair_state.ts";

runRole(() => {
  const family = Number(Deno.args[0]) as Family;
  if (family !== 4 && family !== 6) throw new Error("usage: remote.ts 4|6");
  const listener = tcpListener(family);
  const end = new StreamEnd("to-passt", "to-remote");
  end.commands.set("accept", ([ms]) => {
    end.fd = acceptWithin(listener.fd, Math.max(0, deadlineFrom(ms) - performance.now()));
    closeFd(listener.fd);
    return {
      ok: true,
      local: formatAddress(localAddress(end.fd)),
      peer: formatAddress(peerAddress(end.fd)),
    };
  });
  say({ ok: true, port: listener.port, pid: Deno.pid });
  end.run();
});
