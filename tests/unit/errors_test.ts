import assert from "node:assert/strict";
import * as errors from "../../src/errors.ts";
import {
  check,
  describeErrno,
  errnoName,
  NotASocketError,
  SymlinkRefusedError,
  SyscallError,
  TimeoutError,
} from "../../src/errors.ts";
import { unit } from "./_unit.ts";

unit("describeErrno() gives text and symbol, never a bare number", () => {
  assert.equal(describeErrno(2), "No such file or directory (ENOENT)");
  assert.equal(describeErrno(111), "Connection refused (ECONNREFUSED)");
  assert.equal(describeErrno(11), "Resource temporarily unavailable (EAGAIN)");
  assert.equal(describeErrno(95), "Operation not supported (EOPNOTSUPP)");
  assert.equal(describeErrno(9999), "Unknown error 9999 (errno 9999)");
  assert.equal(errnoName(1), "EPERM");
});

unit("SyscallError carries syscall, errno and name, and exits 1", () => {
  const e = new SyscallError("connect", 111, "Failed to connect to /x");
  assert.equal(e.message, "Failed to connect to /x: Connection refused (ECONNREFUSED)");
  assert.deepEqual([e.syscall, e.errno, e.errnoName, e.exitCode], [
    "connect",
    111,
    "ECONNREFUSED",
    1,
  ]);
  assert.equal(
    new SyscallError("x", 1, "Ctx", "a hint").message,
    "Ctx: Operation not permitted (EPERM); a hint",
  );
});

unit("path errors exit 2 and say what is wrong", () => {
  assert.equal(new NotASocketError("/tmp/f").message, "/tmp/f is not a socket");
  assert.equal(new NotASocketError("/tmp/f").exitCode, 2);
  const link = new SymlinkRefusedError("/run/vm.repair");
  assert.match(link.message, /^\/run\/vm\.repair is a symbolic link: name the socket itself/);
  assert.equal(link.exitCode, 2);
  assert.equal(new TimeoutError(1.5, "x").exitCode, 1);
});

unit("the named errno values are the ones their names say", () => {
  const named = Object.entries(errors).filter(([name]) => /^E[A-Z0-9]+$/.test(name));
  assert.ok(named.length >= 8, named.join(" "));
  for (const [name, value] of named) assert.equal(errnoName(value as number), name);
});

unit("check() passes a result through and turns -errno into a SyscallError", () => {
  assert.equal(check(0, "close", "unused"), 0);
  assert.equal(check(7, "socket", "unused"), 7);
  assert.throws(
    () => check(-errors.ECONNREFUSED, "connect", "Failed to connect to /x", "is passt running?"),
    (e) =>
      e instanceof SyscallError && e.syscall === "connect" && e.errnoName === "ECONNREFUSED" &&
      e.exitCode === 1 &&
      e.message ===
        "Failed to connect to /x: Connection refused (ECONNREFUSED); is passt running?",
  );
});
