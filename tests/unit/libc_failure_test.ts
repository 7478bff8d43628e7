// What src/ffi/libc.ts's wrappers return for a failed call: a negative
// errno, and never 0, even were errno clobbered to 0 (the calls bound by
// openLibc("connect") do not guarantee it). Importing the module opens
// nothing: this runs with no permissions.

import assert from "node:assert/strict";
import { unit } from "./_unit.ts";
import { failure } from "../../src/ffi/libc.ts";
import { ECONNREFUSED, EINTR, EIO } from "../../src/errors.ts";

unit("a failed call's result is -errno", () => {
  assert.equal(failure(ECONNREFUSED), -ECONNREFUSED);
  assert.equal(failure(EINTR), -EINTR);
});

unit("a failed call never reads as success, even with errno 0", () => {
  const r = failure(0);
  // -0 would pass both checks that callers make for success
  assert.ok(r < 0, `failure(0) is ${Object.is(r, -0) ? "-0" : r}`);
  assert.notEqual(r, 0);
  assert.equal(r, -EIO);
});
