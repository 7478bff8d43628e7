import assert from "node:assert/strict";
import * as abi from "../../src/abi.ts";
import { byteLength, kindOfMode, sockaddrUn } from "../../src/path.ts";
import { unit } from "./_unit.ts";

unit("struct layouts match LP64 Linux (x86_64 and aarch64)", () => {
  assert.equal(abi.MSGHDR_SIZE, 56);
  assert.deepEqual(
    [
      abi.MSG_NAME,
      abi.MSG_NAMELEN,
      abi.MSG_IOV,
      abi.MSG_IOVLEN,
      abi.MSG_CONTROL,
      abi.MSG_CONTROLLEN,
      abi.MSG_FLAGS,
    ],
    [0, 8, 16, 24, 32, 40, 48],
  );
  assert.equal(abi.IOVEC_SIZE, 16);
  assert.equal(abi.CMSG_HDR_SIZE, 16);
  assert.deepEqual([abi.cmsgLen(4), abi.cmsgSpace(4), abi.cmsgSpace(12)], [20, 24, 32]);
  assert.equal(abi.SOCKADDR_UN_SIZE, 110);
  assert.equal(abi.STX_MODE, 28);
  assert.equal(abi.oDirectory("x86_64"), 0x10000);
  assert.equal(abi.oDirectory("aarch64"), 0x4000);
  assert.equal(abi.archOf("x86_64"), "x86_64");
  assert.equal(abi.archOf("riscv64"), null);
});

unit("kernel constants have their kernel values", () => {
  assert.deepEqual(
    [
      abi.SOL_TCP,
      abi.TCP_REPAIR,
      abi.SCM_RIGHTS,
      abi.SCM_MAX_FD,
      abi.MSG_CTRUNC,
      abi.MSG_NOSIGNAL,
      abi.MSG_CMSG_CLOEXEC,
    ],
    [6, 19, 1, 253, 8, 0x4000, 0x40000000],
  );
  assert.deepEqual([abi.TCP_REPAIR_ON, abi.TCP_REPAIR_OFF, abi.TCP_REPAIR_OFF_NO_WP], [1, 0, -1]);
});

unit("kindOfMode() tells sockets, directories and the rest apart", () => {
  assert.equal(kindOfMode(0o140755), "socket");
  assert.equal(kindOfMode(0o040755), "directory");
  for (const m of [0o100644, 0o010644, 0o120777, 0o020666]) assert.equal(kindOfMode(m), "other");
});

unit("sockaddrUn() measures UTF-8 bytes and NUL-terminates", () => {
  const sa = sockaddrUn("/run/ü.repair");
  assert.equal(byteLength("/run/ü.repair"), 14);
  assert.equal(sa.length, 2 + 14 + 1);
  assert.equal(sa.bytes[0], abi.AF_UNIX);
  assert.equal(sa.bytes[2 + 14], 0);
  const fits = "/" + "a".repeat(106);
  assert.equal(sockaddrUn(fits).length, 110);
  assert.throws(() => sockaddrUn(fits + "a"), RangeError);
  // 54 two-byte characters: 109 bytes although the string has 55 code units
  assert.throws(() => sockaddrUn("/" + "é".repeat(54)), /109 bytes/);
});
