// libc for test tooling: the fake passt (peer_native.ts) and the migrating
// passt's repair-state calls (repair_state.ts). Each keeps its own table of
// symbols; this opens it on first use and reads errno the way the program
// does, through a typed array over the thread's errno.
//
// Never imported by the program, whose complete native surface is
// src/ffi/libc.ts.

import { describeErrno } from "../../src/errors.ts";

/** A failed call in test tooling, with errno as text */
export class PeerError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call}: ${describeErrno(errno)}`);
  }
}

type WithErrno = Deno.ForeignLibraryInterface & {
  readonly __errno_location: { readonly parameters: readonly []; readonly result: "pointer" };
};

/** A table of libc symbols, opened on first use */
export class LazyLibc<S extends WithErrno> {
  readonly #table: S;
  #symbols: Deno.DynamicLibrary<S>["symbols"] | null = null;
  #errno = new Int32Array(1);

  constructor(table: S) {
    this.#table = table;
  }

  /** The bound symbols; opens libc the first time */
  get c(): Deno.DynamicLibrary<S>["symbols"] {
    if (this.#symbols === null) {
      const lib = Deno.dlopen("libc.so.6", this.#table);
      const errnoLocation = lib.symbols.__errno_location as () => Deno.PointerValue;
      const where = errnoLocation();
      if (where === null) throw new Error("__errno_location() returned NULL");
      this.#errno = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(where, 4));
      this.#symbols = lib.symbols;
    }
    return this.#symbols;
  }

  /** errno now: read it right after the failing call */
  errno(): number {
    return this.#errno[0]!;
  }

  /** The result, or a PeerError naming `call` */
  check(call: string, r: number | bigint): number {
    if (r < 0) throw new PeerError(call, this.errno());
    return Number(r);
  }

  /** The result, or -errno, for calls whose failure the caller handles */
  soft(r: number | bigint): number {
    return r < 0 ? -this.errno() : Number(r);
  }
}
