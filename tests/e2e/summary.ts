// The run's results as text: one line per variant, the C-versus-ours timing
// table, and the counts .ci/run adds to its own. Pure.

export interface MigrationRecord {
  /** 0 -> 1 is hop 1 */
  hop: number;
  /**
   * kept: every byte both ways; rolled-back: a migration made to fail after
   * ON, and the source kept every byte; race: passt's race (repeated);
   * expected-failure: a negative control failed as it must; passt-died:
   * passt died after a correct rollback (its own bug; the variant is
   * repeated on a fresh VM)
   */
  outcome: "kept" | "rolled-back" | "race" | "failed" | "expected-failure" | "passt-died";
  detail: string;
  /** passt's source ON stage and target restore, from its log (ms) */
  onMs: number | null;
  restoreMs: number | null;
}

export interface VariantResult {
  name: string;
  helper: string;
  passt: string;
  conns: number;
  /** Migrations asked for */
  wanted: number;
  migrations: MigrationRecord[];
  passed: boolean;
  /** Why it failed (empty when it passed) */
  reason: string;
  /** strace or ptrace on the source passt (issue 14's variants): its timings are not passt's own */
  forced?: boolean;
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function variantLine(r: VariantResult): string {
  const kept = r.migrations.filter((m) => m.outcome === "kept").length;
  const rolledBack = r.migrations.filter((m) => m.outcome === "rolled-back").length;
  const races = r.migrations.filter((m) => m.outcome === "race").length;
  const expected = r.migrations.filter((m) => m.outcome === "expected-failure").length;
  const attempted = r.migrations.length;
  const died = r.migrations.filter((m) => m.outcome === "passt-died").length;
  const counts = expected
    ? `failed as it must (${expected} migration` +
      (attempted > expected ? `, ${attempted} attempted` : "") + ")"
    : `${kept + rolledBack}/${r.wanted} migrations kept every byte` +
      (rolledBack ? ` (${rolledBack} rolled back)` : "") + `, ${attempted} attempted, ` +
      `${races} passt race${races === 1 ? "" : "s"}` +
      (died ? `, passt died after ${died} rollback${died === 1 ? "" : "s"} (repeated)` : "");
  return `${r.passed ? "PASS" : "FAIL"} ${r.name} (${r.conns} conn${r.conns === 1 ? "" : "s"}): ` +
    counts + (r.reason ? ` — ${r.reason}` : "");
}

function fmt(ms: number | null): string {
  return ms === null ? "-" : ms.toFixed(1);
}

/**
 * Medians of passt's source ON stage and target restore, per helper, passt
 * version and connection count: a figure, not a test.
 */
export function timingTable(results: readonly VariantResult[]): string[] {
  const rows = new Map<string, { on: number[]; restore: number[] }>();
  for (const r of results) {
    if (r.helper === "none" || r.forced) continue;
    const key = `${r.helper}\t${r.passt}\t${r.conns}`;
    const row = rows.get(key) ?? { on: [], restore: [] };
    for (const m of r.migrations) {
      if (m.outcome !== "kept") continue;
      if (m.onMs !== null) row.on.push(m.onMs);
      if (m.restoreMs !== null) row.restore.push(m.restoreMs);
    }
    rows.set(key, row);
  }
  const lines = [
    "helper       passt  conns  migrations  source ON median (ms)  target restore median (ms)",
  ];
  for (const [key, row] of [...rows].sort()) {
    const [helper, passt, conns] = key.split("\t");
    lines.push(
      `${helper!.padEnd(12)} ${passt!.padEnd(6)} ${conns!.padStart(5)}  ${
        String(row.on.length).padStart(10)
      }  ${fmt(median(row.on)).padStart(21)}  ${fmt(median(row.restore)).padStart(26)}`,
    );
  }
  return lines;
}

/** The last line, in the form .ci/run adds to its own count */
export function countLine(results: readonly VariantResult[]): string {
  const passed = results.filter((r) => r.passed).length;
  return `e2e: ${passed} passed, ${results.length - passed} failed`;
}
