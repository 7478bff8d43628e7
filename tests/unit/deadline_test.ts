import assert from "node:assert/strict";
import { Deadline } from "../../src/deadline.ts";
import { TimeoutError } from "../../src/errors.ts";
import { unit } from "./_unit.ts";

unit("Deadline.after(null) never ends: remainingMs() is -1", () => {
  assert.equal(Deadline.after(null), Deadline.NONE);
  assert.equal(Deadline.NONE.remainingMs("x", Number.MAX_SAFE_INTEGER), -1);
});

unit("Deadline.remainingMs() counts whole milliseconds down from --timeout", () => {
  const d = Deadline.after(1.5, 1000);
  assert.equal(d.remainingMs("x", 1000), 1500);
  assert.equal(d.remainingMs("x", 2499.2), 1); // a fraction left is still a wait
});

unit("Deadline.remainingMs() throws TimeoutError naming what was awaited once it passed", () => {
  const d = Deadline.after(0.25, 0);
  assert.throws(
    () => d.remainingMs("a socket named *.repair in /run/passt", 250),
    (e: unknown) =>
      e instanceof TimeoutError && e.exitCode === 1 &&
      e.message === "Timed out after 0.25 s waiting for a socket named *.repair in /run/passt",
  );
});
