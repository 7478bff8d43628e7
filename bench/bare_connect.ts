// The bench's yardstick for startup: a bare Deno script that only connects to
// a UNIX socket and waits for EOF, with no native calls of its own. The
// helper's start to connected and peak RSS are stated against it.
//
//   deno run --allow-net --allow-read=PATH --allow-write=PATH bench/bare_connect.ts PATH

const conn = await Deno.connect({ transport: "unix", path: Deno.args[0]! });
const byte = new Uint8Array(1);
while ((await conn.read(byte)) !== null) {
  // Nothing is ever sent to it: wait for the bench to close its end
}
