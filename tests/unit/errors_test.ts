import assert from "node:assert/strict";
import {
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
